// ChildProcess and the other helpers shared by the test targets that run real programs.
@_exported import FlitzTestSupport
