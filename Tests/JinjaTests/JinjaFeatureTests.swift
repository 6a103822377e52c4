import Foundation
import Jinja
import Testing

/// Small templates exercising one engine feature each, with jinja2's output (or error and the
/// template line it reported) recorded by scripts/fixtures/chat_templates.py.
struct JinjaFeatureTests {
    struct Feature: CustomTestStringConvertible, Sendable {
        let name: String
        let source: String
        let variables: OrderedObject
        let expected: String?
        let errorType: String?
        let errorMessage: String?
        let errorLine: Int?
        var testDescription: String { name }
    }

    static func loadFeatures() throws -> [Feature] {
        let url = try #require(Bundle.module.url(forResource: "jinja-features.json", withExtension: nil, subdirectory: "Fixtures"))
        guard case .object(let root) = try JinjaValue.parseJSON(Data(contentsOf: url)), case .array(let items)? = root["features"] else {
            throw ChatTemplateFixtureTests.FixtureError.malformed("jinja-features.json")
        }
        return try items.map { item in
            let object = try ChatTemplateFixtureTests.object(item)
            guard case .object(let variables)? = object["variables"] else {
                throw ChatTemplateFixtureTests.FixtureError.malformed("feature without variables")
            }
            var errorLine: Int?
            if case .int(let line)? = object["error_line"] { errorLine = line }
            return Feature(
                name: try ChatTemplateFixtureTests.string(object["name"]),
                source: try ChatTemplateFixtureTests.string(object["template"]),
                variables: variables,
                expected: object["expected"].flatMap { if case .string(let text) = $0 { text } else { nil } },
                errorType: object["error_type"].flatMap { if case .string(let text) = $0 { text } else { nil } },
                errorMessage: object["error"].flatMap { if case .string(let text) = $0 { text } else { nil } },
                errorLine: errorLine)
        }
    }

    static let features: [Feature] = (try? loadFeatures()) ?? []

    @Test("the feature fixture loads and has both successes and errors")
    func fixtureLoads() throws {
        let features = try Self.loadFeatures()
        #expect(features.count > 50)
        #expect(features.contains { $0.expected != nil })
        #expect(features.contains { $0.errorType == "TemplateSyntaxError" })
    }

    private func render(_ feature: Feature) throws -> String {
        let template = try ChatTemplate(source: feature.source)
        var extra: [String: JinjaValue] = [:]
        for (key, value) in feature.variables where key != "messages" { extra[key] = value }
        return try template.render(
            messages: feature.variables["messages"] ?? .array([]), tools: nil, addGenerationPrompt: false, bosToken: "<s>", eosToken: "</s>",
            extra: extra, now: ChatTemplateFixtureTests.now, timeZone: TimeZone(identifier: "UTC")!)
    }

    @Test("renders like jinja2", arguments: features.filter { $0.expected != nil })
    func rendersLikeJinja2(feature: Feature) throws {
        let output = try render(feature)
        #expect(output == feature.expected)
    }

    @Test("throws where jinja2 raised, naming the same template line", arguments: features.filter { $0.errorType != nil })
    func throwsLikeJinja2(feature: Feature) throws {
        do {
            let output = try render(feature)
            Issue.record("jinja2 raised \(feature.errorType!): \(feature.errorMessage!) but Swift rendered \(output.debugDescription)")
        } catch let error as JinjaError {
            switch feature.errorType {
            case "TemplateSyntaxError", "TemplateAssertionError", "SyntaxError":
                #expect(error == .syntax(error.message, line: error.line))
            case "UndefinedError":
                #expect(error == .undefined(error.message, line: error.line))
                #expect(error.message == feature.errorMessage)
            case "SecurityError":
                #expect(error == .security(error.message, line: error.line))
                #expect(error.message == feature.errorMessage)
            case "TemplateError":
                #expect(error == .raised(feature.errorMessage!, line: error.line))
            default:
                #expect(error == .runtime(error.message, line: error.line))
            }
            // Python's own SyntaxError (break outside a loop) points into generated code, not the template.
            if let line = feature.errorLine, feature.errorType != "SyntaxError" {
                #expect(error.line == line, "\(error)")
                #expect(error.description.contains("line \(line)"))
            }
        }
    }
}
