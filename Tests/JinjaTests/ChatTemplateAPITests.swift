import Foundation
import Jinja
import Testing

/// The router-facing API: JSON in request order, errors with lines, variables transformers defines.
struct ChatTemplateAPITests {
    private func render(_ source: String, messages: JinjaValue = [], tools: JinjaValue? = nil,
                        extra: [String: JinjaValue] = [:]) throws -> String {
        try ChatTemplate(source: source).render(
            messages: messages, tools: tools, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>", extra: extra)
    }

    @Test("parseJSON keeps object key order and tojson writes it back in that order")
    func jsonKeyOrder() throws {
        let arguments = try JinjaValue.parseJSON(Data(#"{"zeta": 1, "alpha": {"y": [true, null], "b": 2.50}, "mid": "é\u00e9\ud83d\ude00"}"#.utf8))
        guard case .object(let object) = arguments else {
            Issue.record("expected an object")
            return
        }
        #expect(object.keys == ["zeta", "alpha", "mid"])
        let output = try render("{{ args|tojson }}|{{ args }}", extra: ["args": arguments])
        #expect(output == #"{"zeta": 1, "alpha": {"y": [true, null], "b": 2.5}, "mid": "éé😀"}|{'zeta': 1, 'alpha': {'y': [True, None], 'b': 2.5}, 'mid': 'éé😀'}"#)
    }

    @Test("parseJSON distinguishes integers from floats and rejects malformed input")
    func jsonNumbersAndErrors() throws {
        #expect(try JinjaValue.parseJSON(Data("[1, -2, 3.0, 1e2, 0.5]".utf8)) == [1, -2, 3.0, 100.0, 0.5])
        #expect(throws: JinjaJSONError.trailingData(offset: 3)) { try JinjaValue.parseJSON(Data("{} x".utf8)) }
        #expect(throws: JinjaJSONError.unexpectedEnd) { try JinjaValue.parseJSON(Data(#"{"a": "#.utf8)) }
        #expect(throws: JinjaJSONError.unexpectedByte(UInt8(ascii: "}"), offset: 6)) {
            try JinjaValue.parseJSON(Data(#"{"a": }"#.utf8))
        }
    }

    @Test("a syntax error is thrown by init and names the template line")
    func syntaxErrorLine() {
        #expect(throws: JinjaError.syntax("unexpected ')'", line: 3)) {
            try ChatTemplate(source: "one\ntwo\n{{ x }} }} {{ ) }}")
        }
        do {
            _ = try ChatTemplate(source: "a\n{% for x in y %}\nb")
            Issue.record("an unclosed for block must not parse")
        } catch {
            #expect("\(error)".contains("line 2"))
        }
    }

    @Test("raise_exception throws JinjaError.raised with the message and line")
    func raiseException() throws {
        let template = try ChatTemplate(source: "{% for m in messages %}\n{% if m.role == 'bad' %}\n{{ raise_exception('role ' ~ m.role ~ ' is not supported') }}{% endif %}{% endfor %}")
        #expect(throws: JinjaError.raised("role bad is not supported", line: 3)) {
            try template.render(messages: [["role": "bad"]], tools: nil, addGenerationPrompt: false, bosToken: "", eosToken: "")
        }
        let error = JinjaError.raised("role bad is not supported", line: 3)
        #expect(error.description.contains("role bad is not supported") && error.description.contains("line 3"))
    }

    @Test("tools and documents are defined as none when absent, as transformers passes them")
    func absentToolsAreNone() throws {
        let source = "{{ tools is defined }} {{ tools is none }} {{ documents is none }} {{ add_generation_prompt }} {{ bos_token }}{{ eos_token }} {{ custom }}"
        #expect(try render(source) == "True True True True <s></s> ")
        #expect(try render(source, tools: [["type": "function"]], extra: ["documents": [], "custom": 3]) == "True False False True <s></s> 3")
    }

    @Test("a template that loops or grows without bound stops with an error naming its line", arguments: [
        ("x\n{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}", 2, "loop iterations"),
        ("{{ 'x' * 1000000000000 }}", 1, "bytes"),
        ("{{ [1, 2] * 100000000 }}", 1, "items"),
        ("{% set ns = namespace(s='ab') %}\n{% for i in range(64) %}\n{% set ns.s = ns.s + ns.s %}{% endfor %}", 3, "bytes"),
        ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", 1, "bytes"),
        ("\n\n{% for i in range(100) %}{{ 'y' * 1000000 }}{% endfor %}", 3, "the output"),
        ("{{ 'a'|center(1000000000000) }}", 1, "center"),
        ("{{ 'a'.zfill(1000000000000) }}", 1, "zfill"),
        ("{{ 'a'.ljust(1000000000000) }}", 1, "ljust"),
        ("{{ '%999999999999d'|format(1) }}", 1, "format width"),
        ("{{ '{:999999999999}'.format(1) }}", 1, "format width"),
        ("{{ 'abc'|indent(1000000000000) }}", 1, "indent"),
        ("{{ ('x' * 1000000)|replace('x', 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy') }}", 1, "replace"),
        ("{% set ns = namespace(l=[1, 2, 3]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", 1, "items"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}", 1, "recursed"),
    ])
    func boundedRender(source: String, line: Int, mentions: String) throws {
        let started = ContinuousClock.now
        do {
            _ = try render(source)
            Issue.record("rendered without bound: \(source)")
        } catch let error as JinjaError {
            #expect(error.description.contains(mentions), "\(error)")
            #expect(error.description.contains("line \(line)"), "\(error)")
        }
        #expect(ContinuousClock.now - started < .seconds(20))
    }

    @Test("inputs the fuzzer found (each crashed the router) render or fail with an error")
    func fuzzFindings() throws {
        #expect(try render("{{ '12'|int(base=99) }} {{ 'x'|int(base=-5) }}") == "12 0")
        #expect(try render("{{ 2.5|round(99999999999) }}") == "2.5")
        #expect(try render("{{ (-9223372036854775807 - 1)|abs > 0 }}") == "True")
        #expect(try render("{{ '%.1000f' % 1.5 }}").count == 1002)
        #expect(try render("{{ [] * 1000000000000 }} {{ 1e300 is even }} {{ 2.5 is odd }}") == "[] True False")
        for source in ["{{ 1e300|int }}", "{{ '%d' % 1e300 }}", "{{ '%c' % -1 }}", "{{ '%.99999999999f' % 1 }}",
                       "{{ '{:.99999999999f}'.format(1.5) }}", "{{ [1]|batch(1000000000000, 0) }}",
                       "{{ '{-1}'.format(1) }}", "{{ '{99999999999999999999}'.format(1) }}"] {
            #expect(throws: JinjaError.self, "\(source)") { try render(source) }
        }
        // A namespace holding itself prints as Python does instead of recursing forever.
        #expect(try render("{% set ns = namespace() %}{% set ns.x = ns %}{{ ns }}") == "<Namespace {'x': <Namespace {...}>}>")
        // Nesting and tag sizes are bounded at parse time, so no template exhausts the stack.
        for (source, mentions) in [
            ("{{ " + String(repeating: "(", count: 400) + "1" + String(repeating: ")", count: 400) + " }}", "nesting"),
            (String(repeating: "{% if 1 %}", count: 20000) + String(repeating: "{% endif %}", count: 20000), "nesting"),
            ("{{ " + String(repeating: "not ", count: 500) + "1 }}", "nesting"),
            ("{{ " + String(repeating: "1 + ", count: 30000) + "1 }}", "tokens"),
        ] {
            #expect {
                _ = try ChatTemplate(source: source)
            } throws: { error in
                "\(error)".contains(mentions) && "\(error)".contains("line 1")
            }
        }
    }

    @Test("input lists and dicts cannot be mutated (immutable sandbox)")
    func immutableInputs() {
        #expect(throws: JinjaError.security("access to attribute 'append' of 'list' object is unsafe.", line: 1)) {
            try render("{{ messages.append(1) }}", messages: [])
        }
        #expect(throws: JinjaError.security("access to attribute 'pop' of 'dict' object is unsafe.", line: 2)) {
            try render("x\n{% set m = messages[0] %}{{ m.pop('role') }}", messages: [["role": "user"]])
        }
    }

    @Test("strftime_now formats the given instant in the given time zone")
    func strftimeNow() throws {
        let template = try ChatTemplate(source: "{{ strftime_now('%Y-%m-%d %H:%M:%S %a %b %-d %e %j %p') }}")
        let instant = Date(timeIntervalSince1970: 1_772_892_309)  // 2026-03-07 14:05:09 UTC
        let utc = try template.render(messages: [], tools: nil, addGenerationPrompt: false, bosToken: "", eosToken: "",
                                      now: instant, timeZone: TimeZone(identifier: "UTC")!)
        #expect(utc == "2026-03-07 14:05:09 Sat Mar 7  7 066 PM")
        let tokyo = try template.render(messages: [], tools: nil, addGenerationPrompt: false, bosToken: "", eosToken: "",
                                        now: instant, timeZone: TimeZone(identifier: "Asia/Tokyo")!)
        #expect(tokyo == "2026-03-07 23:05:09 Sat Mar 7  7 066 PM")
    }

    @Test("one parsed template renders concurrently from many tasks")
    func concurrentRenders() async throws {
        let template = try ChatTemplate(source: "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}")
        let outputs = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<32 {
                group.addTask {
                    try template.render(messages: [["role": "user", "content": .string("n\(index)")]], tools: nil,
                                        addGenerationPrompt: false, bosToken: "", eosToken: "")
                }
            }
            return try await group.reduce(into: Set<String>()) { $0.insert($1) }
        }
        #expect(outputs == Set((0..<32).map { "<user>n\($0)" }))
    }

    @Test("integer arithmetic at Int.min gives what the overflow fallback gives instead of trapping")
    func integerEdges() throws {
        let extra: [String: JinjaValue] = ["x": .int(Int.min)]
        let negated = try render("{{ x * -1 }}", extra: extra)
        #expect(try render("{{ -x }}", extra: extra) == negated)
        #expect(try render("{{ x // -1 }}", extra: extra) == negated)
        #expect(try render("{{ x % -1 }}", extra: extra) == "0")
        #expect(try render("{{ [x, -1] | sum }}", extra: extra) == (try render("{{ x - 1 }}", extra: extra)))
        #expect(try render("{{ -7 // 2 }} {{ 7 // -2 }} {{ -7 % 2 }} {{ [1, 2] | sum }}") == "-4 -4 1 3")
    }
}
