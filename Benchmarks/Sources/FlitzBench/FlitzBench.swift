import ArgumentParser
import FlitzLoad
import Foundation

/// `flitz-bench`: load generator for a running `flitz-relay` (Benchmarks/README.md, "Relay load").
/// Each mode prints readable lines and one `RESULT mode=… key=value …` line for scripts (run-load.sh).
@main
struct FlitzBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flitz-bench",
        abstract: "Load generator for the Flitz relay.",
        subcommands: [Throughput.self, Floor.self, Connections.self, Backlog.self, EchoServer.self])
}

/// Options every client mode shares.
struct Target: ParsableArguments {
    @Option(help: "Server address.")
    var host = "127.0.0.1"

    @Option(help: "Server port.")
    var port = 7878

    @Option(help: "The server's process id, for its CPU use (and VmRSS in connections mode).")
    var serverPID: Int32?

    @Option(help: "Generator event-loop threads.")
    var threads = 1
}

/// Timing of the rate modes.
struct Timing: ParsableArguments {
    @Option(help: "Seconds of warm-up before the measured interval.")
    var warmup = 2.0

    @Option(help: "Seconds measured.")
    var duration = 10.0
}

/// Progress lines go to standard error, so standard output holds only results.
func progress(_ line: String) {
    FileHandle.standardError.write(Data("flitz-bench: \(line)\n".utf8))
}

func printOut(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func format(_ value: Double?, _ digits: Int = 1) -> String {
    guard let value else { return "na" }
    return String(format: "%.\(digits)f", value)
}

func errorsField(_ errors: [Int: Int]) -> String {
    errors.isEmpty ? "none" : errors.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
}

struct Throughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sender→recipient pairs through the relay: envelopes/s acknowledged end to end, and latencies.")

    @OptionGroup var target: Target
    @OptionGroup var timing: Timing

    @Option(help: "Sender→recipient pairs (two connections each).")
    var pairs = 100

    @Option(help: "Ciphertext bytes per envelope (at least 8).")
    var size = 256

    @Option(help: "Envelopes in flight per pair (closed loop), or their cap (open loop).")
    var window = 16

    @Option(help: "Open loop: envelopes per second offered in total. Omit for closed loop (saturation).")
    var rate: Double?

    @Option(help: "Envelopes per Submit frame (1 to 100).")
    var batch = 1

    @Option(help: "The port the recipients connect to (another node of a relay cluster); default: --port.")
    var recipientPort: Int?

    func validate() throws {
        guard pairs > 0, size >= 8, window > 0, (1...100).contains(batch), timing.duration > 0 else {
            throw ValidationError("--pairs, --window and --duration must be positive, --size at least 8, --batch 1 to 100")
        }
    }

    func run() async throws {
        var options = ThroughputOptions()
        options.host = target.host
        options.port = target.port
        options.serverPID = target.serverPID
        options.threads = target.threads
        options.pairs = pairs
        options.size = size
        options.window = window
        options.rate = rate
        options.batch = batch
        options.recipientPort = recipientPort
        options.warmup = .milliseconds(Int64(timing.warmup * 1000))
        options.duration = .milliseconds(Int64(timing.duration * 1000))
        ProcessStats.raiseOpenFilesLimit()
        let result = try await runThroughput(options, log: progress)
        printOut("throughput: \(Int(result.envelopesPerSecond)) envelopes/s acknowledged end to end (\(result.completed) in \(format(result.seconds)) s), \(rate.map { "open loop at \(Int($0))/s" } ?? "closed loop, window \(window)"), \(pairs) pairs, \(size) B")
        printOut("  submit → delivered:        \(result.delivery)")
        printOut("  submit → SubmitResult:     \(result.submit)")
        printOut("  submit → both acknowledged: \(result.endToEnd)")
        printOut("  CPU: generator \(format(result.generatorCPU)) %, relay \(format(result.serverCPU)) % (of one core)")
        printOut("  errors: \(errorsField(result.errors)), unfinished after drain: \(result.unfinished)")
        printOut(
            "RESULT mode=throughput loop=\(rate == nil ? "closed" : "open") pairs=\(pairs) size=\(size) window=\(window) batch=\(batch) offered=\(format(rate, 0)) "
                + "rate=\(format(result.envelopesPerSecond, 0)) p50_us=\(format(result.delivery.p50, 0)) p99_us=\(format(result.delivery.p99, 0)) "
                + "p999_us=\(format(result.delivery.p999, 0)) max_us=\(format(result.delivery.max, 0)) submit_p50_us=\(format(result.submit.p50, 0)) "
                + "submit_p99_us=\(format(result.submit.p99, 0)) e2e_p99_us=\(format(result.endToEnd.p99, 0)) gen_cpu=\(format(result.generatorCPU)) "
                + "server_cpu=\(format(result.serverCPU)) errors=\(errorsField(result.errors)) unfinished=\(result.unfinished)")
    }
}

struct Floor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Round trips against `flitz-bench echo-server`: the WebSocket floor for the throughput figures.")

    @OptionGroup var target: Target
    @OptionGroup var timing: Timing

    @Option(help: "Connections doing round trips.")
    var connections = 100

    @Option(help: "Ciphertext bytes of the Submit frame echoed (the message is that frame's size).")
    var size = 256

    @Option(help: "Round trips in flight per connection (closed loop), or their cap (open loop).")
    var window = 16

    @Option(help: "Open loop: round trips per second in total. Omit for closed loop.")
    var rate: Double?

    func run() async throws {
        var options = FloorOptions()
        options.host = target.host
        options.port = target.port
        options.serverPID = target.serverPID
        options.threads = target.threads
        options.connections = connections
        options.size = size
        options.window = window
        options.rate = rate
        options.warmup = .milliseconds(Int64(timing.warmup * 1000))
        options.duration = .milliseconds(Int64(timing.duration * 1000))
        ProcessStats.raiseOpenFilesLimit()
        let result = try await runFloor(options, log: progress)
        printOut("floor: \(Int(result.roundTripsPerSecond)) round trips/s of \(result.messageBytes)-byte messages, \(rate.map { "open loop at \(Int($0))/s" } ?? "closed loop, window \(window)"), \(connections) connections")
        printOut("  round trip: \(result.roundTrip)")
        printOut("  CPU: generator \(format(result.generatorCPU)) %, echo server \(format(result.serverCPU)) % (of one core)")
        printOut(
            "RESULT mode=floor loop=\(rate == nil ? "closed" : "open") connections=\(connections) size=\(size) bytes=\(result.messageBytes) window=\(window) "
                + "offered=\(format(rate, 0)) rate=\(format(result.roundTripsPerSecond, 0)) p50_us=\(format(result.roundTrip.p50, 0)) "
                + "p99_us=\(format(result.roundTrip.p99, 0)) p999_us=\(format(result.roundTrip.p999, 0)) max_us=\(format(result.roundTrip.max, 0)) "
                + "gen_cpu=\(format(result.generatorCPU)) server_cpu=\(format(result.serverCPU))")
    }
}

struct Connections: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Idle authenticated connections: relay memory per connection.")

    @OptionGroup var target: Target

    @Option(help: "Comma-separated connection counts, one step each (e.g. 10000,19900); 'max' = the hard open-files limit less --reserve.")
    var counts = "10000"

    @Option(help: "File descriptors kept free below the hard limit for 'max' (both processes need one per connection).")
    var reserve = 200

    @Option(help: "Source addresses 127.0.0.2 … used in turn.")
    var sourceAddresses = 4

    @Option(help: "Seconds to wait before each VmRSS reading.")
    var settle = 3.0

    func run() async throws {
        guard let pid = target.serverPID else { throw ValidationError("--server-pid (the relay's) is required: its VmRSS is the measurement") }
        let (soft, hard) = ProcessStats.raiseOpenFilesLimit()
        printOut("ulimit -Hn: \(hard) (soft limit raised from \(soft) to \(hard))")
        let parsed = try counts.split(separator: ",").map { item -> Int in
            if item == "max" { return Int(hard) - reserve }
            guard let value = Int(item), value > 0 else { throw ValidationError("bad count \(item)") }
            return value
        }
        var options = ConnectionsOptions(serverPID: pid)
        options.host = target.host
        options.port = target.port
        options.threads = target.threads
        options.counts = parsed
        options.sourceAddresses = sourceAddresses
        options.settle = .milliseconds(Int64(settle * 1000))
        let result = try await runConnections(options, log: progress)
        let mib = { (bytes: Int) in format(Double(bytes) / 1_048_576) }
        printOut("registered \(result.registered) devices in \(format(result.registrationSeconds)) s; relay VmRSS \(mib(result.rssAtStart)) MiB at start, \(mib(result.rssAfterRegistration)) MiB after registering")
        for step in result.steps {
            printOut("connections: \(step.count) idle authenticated: relay VmRSS \(mib(step.rssBefore)) → \(mib(step.rssHeld)) MiB = \(Int(step.bytesPerConnection)) bytes per connection (\(mib(step.rssAfterClose)) MiB after closing); set up in \(format(step.setupSeconds)) s; generator VmRSS \(mib(step.generatorRSS)) MiB")
            printOut(
                "RESULT mode=connections count=\(step.count) hard_limit=\(result.hardLimit) rss_before=\(step.rssBefore) rss_held=\(step.rssHeld) "
                    + "rss_after_close=\(step.rssAfterClose) bytes_per_connection=\(Int(step.bytesPerConnection)) setup_s=\(format(step.setupSeconds)) "
                    + "generator_rss=\(step.generatorRSS) registration_s=\(format(result.registrationSeconds))")
        }
    }
}

struct Backlog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Queue envelopes for an offline device, then time its drain on reconnect.")

    @OptionGroup var target: Target

    @Option(help: "Envelopes to queue (the relay's --max-queued-envelopes must allow them).")
    var envelopes = 20_000

    @Option(help: "Ciphertext bytes per envelope.")
    var size = 256

    func run() async throws {
        var options = BacklogOptions()
        options.host = target.host
        options.port = target.port
        options.serverPID = target.serverPID
        options.envelopes = envelopes
        options.size = size
        let result = try await runBacklog(options, log: progress)
        printOut("backlog: queued \(result.queued) of \(result.envelopes) envelopes of \(size) B in \(format(result.queueMilliseconds, 0)) ms")
        printOut("  drain: Authenticate → QueueDrained \(format(result.untilQueueDrained)) ms (\(result.deliveredBeforeDrained) delivered by then), → all acknowledged \(format(result.untilAllAcknowledged)) ms")
        printOut("  CPU during the drain: generator \(format(result.generatorCPU)) %, relay \(format(result.serverCPU)) %; errors: \(errorsField(result.errors))")
        printOut(
            "RESULT mode=backlog envelopes=\(result.envelopes) queued=\(result.queued) size=\(size) queue_ms=\(format(result.queueMilliseconds, 0)) "
                + "drained_ms=\(format(result.untilQueueDrained)) acked_ms=\(format(result.untilAllAcknowledged)) gen_cpu=\(format(result.generatorCPU)) "
                + "server_cpu=\(format(result.serverCPU)) errors=\(errorsField(result.errors))")
    }
}

struct EchoServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-server", abstract: "A bare hummingbird-websocket echo server at /v1/ws, for the floor mode. Runs until SIGINT or SIGTERM.")

    @Option(help: "Address to bind.")
    var host = "127.0.0.1"

    @Option(help: "Port; 0 picks a free one.")
    var port = 7879

    func run() async throws {
        ProcessStats.raiseOpenFilesLimit()
        try await runEchoServer(host: host, port: port) { port in
            printOut("listening on \(host):\(port)")
        }
    }
}
