// Encoded sizes of a session setup on the wire, with PQXDH and as before it (X3DH only), from real
// encodings of the benchmarks' keys and messages (BenchmarkSupport.HandshakeSizes), as a Markdown table.
// `swift build -c release --product HandshakeSizes && .build/release/HandshakeSizes [handle]`.
import BenchmarkSupport

let handshake = Handshake()
handshake.check()
let sizes = CommandLine.arguments.count > 1 ? HandshakeSizes(handshake, handle: CommandLine.arguments[1]) : HandshakeSizes(handshake)
print(sizes.markdown)
