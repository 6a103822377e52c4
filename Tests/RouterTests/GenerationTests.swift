import Testing
@testable import RouterCore
import Tokenizers

@Suite("Stop strings and streaming text")
struct GenerationTests {
    @Test("text that may still become a stop string is held back, then released when it does not")
    func holdback() {
        var matcher = StopStringMatcher(stopStrings: ["END"])
        #expect(matcher.feed("hello E") == .init(text: "hello ", stopped: false))
        #expect(matcher.feed("N") == .init(text: "", stopped: false))
        #expect(matcher.feed("x") == .init(text: "ENx", stopped: false))
        #expect(matcher.flush() == "")
    }

    @Test("a stop string split over pieces cuts the text before it and nothing follows")
    func splitStop() {
        var matcher = StopStringMatcher(stopStrings: ["\n\n", "STOP"])
        #expect(matcher.feed("one ST") == .init(text: "one ", stopped: false))
        #expect(matcher.feed("OP and more") == .init(text: "", stopped: true))
        #expect(matcher.feed("later") == .init(text: "", stopped: true))
        #expect(matcher.flush() == "")
    }

    @Test("the earliest of several stop strings wins")
    func earliest() {
        var matcher = StopStringMatcher(stopStrings: ["world", "lo w"])
        #expect(matcher.feed("hello world") == .init(text: "hel", stopped: true))
    }

    @Test("held-back text is released at the end of generation")
    func flushAtEnd() {
        var matcher = StopStringMatcher(stopStrings: ["abc"])
        #expect(matcher.feed("xxab") == .init(text: "xx", stopped: false))
        #expect(matcher.flush() == "ab")
    }

    @Test("no stop strings: text passes straight through")
    func passThrough() {
        var matcher = StopStringMatcher(stopStrings: [])
        #expect(matcher.feed("abc") == .init(text: "abc", stopped: false))
    }

    @Test("a multi-byte character split over tokens is released whole")
    func utf8Split() {
        var output = ChoiceOutput(tokenizer: ByteTokenizer(), stopStrings: [], stopTokenIDs: [ByteTokenizer.eos],
                                  skipSpecialTokens: true)
        var releases: [String] = []
        for byte in Array("é€😀".utf8) {  // 2 + 3 + 4 bytes, one token each
            let piece = output.accept(SampledToken(token: TokenID(byte)))
            if !piece.isEmpty { releases.append(piece) }
        }
        #expect(releases == ["é", "€", "😀"])
        #expect(output.finish(.length) == "")
        #expect(output.text == "é€😀")
    }

    @Test("an unfinished character at the end becomes U+FFFD")
    func utf8Unfinished() {
        var output = ChoiceOutput(tokenizer: ByteTokenizer(), stopStrings: [], stopTokenIDs: [ByteTokenizer.eos],
                                  skipSpecialTokens: true)
        #expect(output.accept(SampledToken(token: 0x61)) == "a")
        #expect(output.accept(SampledToken(token: 0xE2)) == "")
        #expect(output.accept(SampledToken(token: 0x82)) == "")
        #expect(output.finish(.length) == "\u{FFFD}")
        #expect(output.text == "a\u{FFFD}")
    }

    @Test("streamed text is the prompt's continuation: a SentencePiece leading space is kept",
          arguments: [(true, true), (true, false), (false, true), (false, false)])
    func streamedContinuesPrompt(stripsLeadingSpace: Bool, skipSpecialTokens: Bool) {
        var tokenizer = ByteTokenizer()
        tokenizer.stripsLeadingSpace = stripsLeadingSpace
        // A special token first (skipped or not), then " hi  there" with its own leading space.
        let ids = [ByteTokenizer.bos] + " hi  there".utf8.map { TokenID($0) }
        var output = ChoiceOutput(tokenizer: tokenizer, stopStrings: [], stopTokenIDs: [ByteTokenizer.eos],
                                  skipSpecialTokens: skipSpecialTokens)
        var streamed = ""
        for id in ids { streamed += output.accept(SampledToken(token: id)) }
        streamed += output.finish(.length)
        #expect(output.text == streamed)
        #expect(streamed == (skipSpecialTokens ? " hi  there" : "<bos> hi  there"))
        // A whole-text decode strips the SentencePiece space; the continuation must not.
        let whole = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
        #expect(stripsLeadingSpace && skipSpecialTokens ? whole == "hi  there" : whole == streamed)
    }

    @Test("a choice's text stops at a stop string, and a stop token adds no text")
    func choiceOutput() {
        let tokenizer = ByteTokenizer()
        var output = ChoiceOutput(tokenizer: tokenizer, stopStrings: ["cd"], stopTokenIDs: [ByteTokenizer.eos],
                                  skipSpecialTokens: true)
        var streamed = ""
        for byte in Array("abcdef".utf8) {
            streamed += output.accept(SampledToken(token: TokenID(byte)))
            if output.isFinished { break }
        }
        #expect(streamed == "ab")
        #expect(output.text == "ab")
        #expect(output.finishReason == .stop)
        #expect(output.tokenCount == 4)

        var plain = ChoiceOutput(tokenizer: tokenizer, stopStrings: [], stopTokenIDs: [ByteTokenizer.eos],
                                 skipSpecialTokens: false)
        _ = plain.accept(SampledToken(token: TokenID(UInt8(ascii: "x"))))
        _ = plain.accept(SampledToken(token: ByteTokenizer.eos))
        #expect(plain.finish(.stop) == "")
        #expect(plain.text == "x")
        #expect(plain.tokenCount == 2)
    }
}

@Suite("JSON")
struct JSONValueTests {
    @Test("objects keep their key order through parse and serialise")
    func order() throws {
        let text = #"{"z":1,"a":[true,null,"x\n\u00e9"],"m":{"b":2.5,"a":-1}}"#
        let value = try JSONValue.parse(text)
        #expect(value.serialized == #"{"z":1,"a":[true,null,"x\né"],"m":{"b":2.5,"a":-1}}"#)
    }

    @Test("malformed JSON is rejected with the byte offset")
    func malformed() {
        #expect(throws: JSONParseError.self) { try JSONValue.parse("{\"a\": }") }
        #expect(throws: JSONParseError.self) { try JSONValue.parse("{\"a\": 1} x") }
        #expect(throws: JSONParseError.self) { try JSONValue.parse("[1, 2") }
    }

    @Test("numbers and strings are read as strictly as RFC 8259 and Python's json.loads")
    func strict() throws {
        for text in ["01", "1.", "-", "1e+", ".5", "[1,]", "\"a\nb\"", "\"tab\there\""] {
            #expect(throws: JSONParseError.self, "\(text.debugDescription) should be rejected") { try JSONValue.parse(text) }
        }
        #expect(try JSONValue.parse("[-0, 1E+2, 0.5e-1, 12]") == [.int(0), .double(100), .double(0.05), .int(12)])
    }

    @Test("a repeated key keeps its first position and its last value, as in Python")
    func repeatedKey() throws {
        let value = try JSONValue.parse(#"{"a":1,"b":2,"a":3}"#)
        #expect(value.serialized == #"{"a":3,"b":2}"#)
        #expect(value["a"] == .int(3))
    }

    @Test("surrogate pairs decode to one scalar; infinities serialise as JSON numbers")
    func edges() throws {
        #expect(try JSONValue.parse(#""\ud83d\ude00""#) == .string("😀"))
        #expect(JSONValue.double(-.infinity).serialized == "-9999.0")
        #expect(JSONValue.double(0.25).serialized == "0.25")
    }
}
