// airoad-chat: run a tune exported by `airoad export coreml` on macOS 15 / iOS 18.
//
//   swift run -c release airoad-chat EXPORT_DIR "PROMPT" [--function ctx_2048] [--cpu-gpu] [--max-tokens 256]
//
// EXPORT_DIR is the --out of `airoad export coreml`: model.mlpackage + tokenizer/.
// The package's contract (also in its metadata, airoad.inputs / airoad.outputs):
//   inputIds   int32   [1, q]          the new tokens (the prompt, then one token per call)
//   causalMask float32 [1, 1, q, end]  additive: 0 = attend, -65504 = not; end = cached + q
//   logits     float32 [1, 1, vocab]   next-token scores after the last new token
//   states keyCache / valueCache       the KV cache, kept by Core ML between calls (MLState)
import CoreML
import Foundation
import Tokenizers

struct Options {
    var exportDir: URL
    var prompt: String
    var function: String? = nil  // nil: the package's default (its largest context)
    var computeUnits: MLComputeUnits = .all
    var maxTokens = 256

    init(_ args: [String]) throws {
        guard args.count >= 3 else {
            throw ChatError.usage("usage: airoad-chat EXPORT_DIR \"PROMPT\" [--function ctx_N] [--cpu-gpu] [--max-tokens N]")
        }
        exportDir = URL(fileURLWithPath: args[1])
        prompt = args[2]
        var i = 3
        while i < args.count {
            switch args[i] {
            case "--function": i += 1; function = args[i]
            // The Neural Engine may refuse a stateful, flexible-shape or 4-bit model; Core ML then
            // falls back by itself, but pinning CPU+GPU avoids its retries.
            case "--cpu-gpu": computeUnits = .cpuAndGPU
            case "--max-tokens": i += 1; maxTokens = Int(args[i]) ?? maxTokens
            default: throw ChatError.usage("unknown option \(args[i])")
            }
            i += 1
        }
    }
}

enum ChatError: Error, CustomStringConvertible {
    case usage(String), metadata(String), tooLong(Int, Int)
    var description: String {
        switch self {
        case .usage(let s): return s
        case .metadata(let key): return "model.mlpackage has no \(key) metadata: export it with airoad export coreml"
        case .tooLong(let n, let ctx): return "the prompt is \(n) tokens; the function holds \(ctx): pick a larger --function"
        }
    }
}

/// [1, 1, q, end] additive mask: new token i (position end - q + i) sees cache rows 0 ... end - q + i.
func causalMask(q: Int, end: Int) throws -> MLMultiArray {
    let mask = try MLMultiArray(shape: [1, 1, NSNumber(value: q), NSNumber(value: end)], dataType: .float32)
    let p = mask.dataPointer.bindMemory(to: Float.self, capacity: q * end)
    for i in 0..<q {
        for j in 0..<end { p[i * end + j] = j > end - q + i ? -65504 : 0 }
    }
    return mask
}

func ids(_ tokens: [Int]) throws -> MLMultiArray {
    let a = try MLMultiArray(shape: [1, NSNumber(value: tokens.count)], dataType: .int32)
    let p = a.dataPointer.bindMemory(to: Int32.self, capacity: tokens.count)
    for (i, t) in tokens.enumerated() { p[i] = Int32(t) }
    return a
}

func argmax(_ logits: MLMultiArray) -> Int {
    let n = logits.count
    let p = logits.dataPointer.bindMemory(to: Float.self, capacity: n)
    var best = 0
    for i in 1..<n where p[i] > p[best] { best = i }
    return best
}

@main
struct AiroadChat {
    static func main() async {
        do { try await run(try Options(CommandLine.arguments)) } catch {
            FileHandle.standardError.write("error: \(error)\n".data(using: .utf8)!)
            exit(2)
        }
    }

    static func run(_ opt: Options) async throws {
        let config = MLModelConfiguration()
        config.computeUnits = opt.computeUnits  // .all: Core ML picks CPU, GPU or Neural Engine
        if let f = opt.function { config.functionName = f }  // one function per context length
        let compiled = try await MLModel.compileModel(at: opt.exportDir.appendingPathComponent("model.mlpackage"))
        let model = try await MLModel.load(contentsOf: compiled, configuration: config)

        let meta = model.modelDescription.metadata[.creatorDefinedKey] as? [String: String] ?? [:]
        guard let eosList = meta["airoad.eos_token_ids"] else { throw ChatError.metadata("airoad.eos_token_ids") }
        let eos = Set(eosList.split(separator: ",").compactMap { Int($0) })
        let system = meta["airoad.system_prompt"] ?? ""
        // the function's context: the upper bound of causalMask's last dimension
        let maskShape = model.modelDescription.inputDescriptionsByName["causalMask"]?.multiArrayConstraint
        let context = maskShape?.shapeConstraint.sizeRangeForDimension.last?.rangeValue.upperBound ?? 2048

        // The chat template the run trained with (tokenizer/tokenizer_config.json), as in training.
        let tokenizer = try await AutoTokenizer.from(modelFolder: opt.exportDir.appendingPathComponent("tokenizer"))
        var messages: [[String: String]] = []
        if !system.isEmpty { messages.append(["role": "system", "content": system]) }
        messages.append(["role": "user", "content": opt.prompt])
        var tokens = try tokenizer.applyChatTemplate(messages: messages)  // ends with <|im_start|>assistant\n
        guard tokens.count < context else { throw ChatError.tooLong(tokens.count, context) }

        let state = model.makeState()  // the KV cache, zeroed; Core ML keeps it between predictions
        var newTokens = tokens
        var answer: [Int] = []
        while answer.count < opt.maxTokens && tokens.count < context {
            let input = try MLDictionaryFeatureProvider(dictionary: [
                "inputIds": MLFeatureValue(multiArray: try ids(newTokens)),
                "causalMask": MLFeatureValue(multiArray: try causalMask(q: newTokens.count, end: tokens.count)),
            ])
            let out = try await model.prediction(from: input, using: state)
            let next = argmax(out.featureValue(for: "logits")!.multiArrayValue!)
            if eos.contains(next) { break }  // <|im_end|> (or <|endoftext|>) ends the answer
            answer.append(next)
            tokens.append(next)
            newTokens = [next]  // decode: one token per call, the cache holds the rest
            print(tokenizer.decode(tokens: [next]), terminator: "")
            fflush(stdout)
        }
        print("")
    }
}
