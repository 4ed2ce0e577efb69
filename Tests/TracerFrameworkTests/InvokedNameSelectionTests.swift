import Foundation
import TestSupport
import TracerFramework
import XCTest

/// `--exe` finds what people name: the invoked path of a symlinked binary (Debian's redis-server), the
/// script an interpreter runs (a gunicorn-like launcher script) and the module of `python -m`.
final class InvokedNameSelectionTests: XCTestCase {
    private func derive(_ exe: String, _ arguments: [String], cwd: String? = "/srv/app", path: String? = "/usr/local/bin:/usr/bin",
                        executables: Set<String> = []) -> ProcessNames {
        ProcessNames.derive(executablePath: exe, arguments: arguments, workingDirectory: cwd, path: { path },
                            isExecutable: { executables.contains($0) })
    }

    func testInvokedPathFromArgv0RelativeAbsoluteAndPATH() {
        XCTAssertEqual(derive("/usr/bin/redis-check-rdb", ["/usr/bin/redis-server", "--port", "1"]).invokedPath, "/usr/bin/redis-server")
        XCTAssertEqual(derive("/srv/app/bin/api", ["./bin/../bin/api"]).invokedPath, "/srv/app/bin/api")
        XCTAssertEqual(derive("/usr/bin/redis-check-rdb", ["redis-server"], executables: ["/usr/bin/redis-server"]).invokedPath,
                       "/usr/bin/redis-server", "found in PATH, the first directory holding it")
        XCTAssertEqual(derive("/usr/bin/redis-check-rdb", ["redis-server"], executables: ["/usr/local/bin/redis-server", "/usr/bin/redis-server"]).invokedPath,
                       "/usr/local/bin/redis-server")
        XCTAssertNil(derive("/usr/bin/x", ["x"], executables: []).invokedPath, "not in PATH: only argv[0] as given")
        // A title rewritten with setproctitle (redis does it): one string of words, and no environment left.
        let redis = derive("/usr/bin/redis-check-rdb", ["redis-server 127.0.0.1:6379"], path: nil, executables: ["/usr/bin/redis-server"])
        XCTAssertEqual(redis.argv0, "redis-server")
        XCTAssertEqual(redis.invokedPath, "/usr/bin/redis-server", "the default PATH when the environment is gone")
        XCTAssertEqual(derive("/usr/bin/python3.11", ["gunicorn: master [app:app]"], executables: ["/usr/local/bin/gunicorn"]).invokedPath,
                       "/usr/local/bin/gunicorn")
    }

    func testScriptsAndModulesOfInterpreters() {
        let python = "/usr/bin/python3.11"
        XCTAssertEqual(derive(python, ["/usr/bin/python3", "/usr/local/bin/gunicorn", "-w", "2", "app:app"]).script, "/usr/local/bin/gunicorn")
        XCTAssertEqual(derive(python, ["python3", "-u", "-W", "ignore", "manage.py", "runserver"]).script, "/srv/app/manage.py")
        XCTAssertEqual(derive(python, ["python3", "-m", "uvicorn", "main:app"]).module, "uvicorn")
        XCTAssertEqual(derive(python, ["python3", "-um", "app.server"]).module, "app.server", "grouped short options")
        XCTAssertEqual(derive(python, ["python3", "-mhttp.server"]).module, "http.server")
        XCTAssertEqual(derive(python, ["python3", "-c", "import x"]), ProcessNames(argv0: "python3", invokedPath: nil),
                       "inline code has no script")
        XCTAssertNil(derive(python, ["python3"]).script, "a REPL")
        XCTAssertEqual(derive("/usr/bin/node", ["node", "--require", "otel.js", "dist/server.js"]).script, "/srv/app/dist/server.js")
        XCTAssertNil(derive("/usr/bin/node", ["node", "-e", "1"]).script)
        XCTAssertEqual(derive("/usr/bin/ruby3.1", ["ruby", "-I", "lib", "bin/puma"]).script, "/srv/app/bin/puma")
        XCTAssertNil(derive("/usr/bin/redis-check-rdb", ["redis-server", "app.py"]).script, "not an interpreter: no script")
    }

    func testExeCandidatesOrderAndServiceNames() {
        let gunicorn = derive("/usr/bin/python3.11", ["/usr/bin/python3", "/usr/local/bin/gunicorn", "app:app"])
        XCTAssertEqual(gunicorn.exeCandidates.map(\.value), ["/usr/bin/python3", "/usr/local/bin/gunicorn"])
        XCTAssertEqual(gunicorn.serviceName(executablePath: "/usr/bin/python3.11"), "gunicorn")
        let uvicorn = derive("/usr/bin/python3.11", ["python3", "-m", "uvicorn"], executables: ["/usr/bin/python3"])
        XCTAssertEqual(uvicorn.exeCandidates.map(\.kind), ["argv[0]", "the invoked path", "the module"])
        XCTAssertEqual(uvicorn.exeCandidates.last?.value, "/uvicorn")
        XCTAssertEqual(uvicorn.serviceName(executablePath: "/usr/bin/python3.11"), "uvicorn")
        XCTAssertEqual(derive("/usr/bin/python3.11", ["python3", "manage.py"]).serviceName(executablePath: "/usr/bin/python3.11"), "manage")
        XCTAssertEqual(derive("/usr/bin/redis-check-rdb", ["/usr/bin/redis-server"]).serviceName(executablePath: "/usr/bin/redis-check-rdb"),
                       "redis-server")
        XCTAssertNil(derive("/srv/api", ["/srv/api"]).serviceName(executablePath: "/srv/api"), "the executable's own name: nothing to add")
        XCTAssertNil(derive("/usr/bin/python3.11", ["python3"], executables: ["/usr/bin/python3"]).serviceName(executablePath: "/usr/bin/python3.11"),
                     "a python3 symlink is no name of the app")
    }

    // MARK: - Real processes, selected by a running agent

    private func startAgent(_ rules: [SelectionRule]) throws -> Agent {
        let agent = try Agent(.init(selection: Selection(rules: rules), tracers: [SelftestTracer()], sinks: [CollectingSink()],
                                    rescanInterval: .seconds(1), drainInterval: .milliseconds(10)))
        try agent.start()
        addTeardownBlock { agent.stop() }
        return agent
    }

    private func launch(_ executable: String, _ arguments: [String], in directory: URL, environment: [String: String] = [:]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        addTeardownBlock { process.terminate(); process.waitUntilExit() }
        return process
    }

    func testDebiansRedisServerIsSelectedByItsInvokedName() throws {
        try requireBPF()
        try requireExecutable("/usr/bin/redis-server", package: "redis-server")
        let resolved = try FileManager.default.destinationOfSymbolicLink(atPath: "/usr/bin/redis-server")
        XCTAssertEqual(resolved, "redis-check-rdb", "the case this test is about: redis-server is a symlink")
        let directory = try temporaryDirectory(self)
        let port = unusedTCPPort()
        let redis = try launch("/usr/bin/redis-server", ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                               in: directory)
        // Redis rewrites its title ("redis-server 127.0.0.1:PORT") once it listens.
        XCTAssertTrue(waitUntil(timeout: 10) {
            ((try? String(contentsOfFile: "/proc/\(redis.processIdentifier)/cmdline", encoding: .utf8)) ?? "").contains(":\(port)")
        })
        let agent = try startAgent([SelectionRule(exePath: "*/redis-server")])
        XCTAssertEqual(agent.selectedProcesses.map(\.pid), [redis.processIdentifier])
        XCTAssertEqual(agent.selectedProcesses.first?.executable, "/usr/bin/redis-check-rdb")
        XCTAssertEqual(agent.selectedProcesses.first?.resource.serviceName, "redis-server", "named after the invoked name")
        agent.stop()
        let byResolved = try startAgent([SelectionRule(exePath: "*/redis-check-rdb")])
        XCTAssertEqual(byResolved.selectedProcesses.map(\.pid), [redis.processIdentifier], "the resolved executable still selects")
        byResolved.stop()
        let other = try startAgent([SelectionRule(exePath: "*/redis-sentinel")])
        XCTAssertFalse(other.selectedProcesses.map(\.pid).contains(redis.processIdentifier), "another symlink to the same file does not")
    }

    func testPythonLauncherScriptAndModuleAreSelectedByName() throws {
        try requireBPF()
        try requireExecutable("/usr/bin/python3", package: "python3")
        let directory = try temporaryDirectory(self)
        let tag = "g\(UInt32.random(in: 0..<1_000_000))"
        // A console-script launcher as pip installs gunicorn's: `#!/usr/bin/python3` and a name without .py.
        let launcher = directory.appendingPathComponent("\(tag)-gunicorn")
        try "#!/usr/bin/python3\nimport time\ntime.sleep(60)\n".write(to: launcher, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: launcher.path)
        let module = directory.appendingPathComponent("\(tag)_uvicorn.py")
        try "import time\ntime.sleep(60)\n".write(to: module, atomically: true, encoding: .utf8)

        let script = try launch(launcher.path, ["app:app"], in: directory)
        let moduleProcess = try launch("/usr/bin/python3", ["-m", "\(tag)_uvicorn"], in: directory, environment: ["PYTHONPATH": directory.path])
        XCTAssertTrue(waitUntil { ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(script.processIdentifier)/exe")) ?? "").contains("python") })

        let agent = try startAgent([SelectionRule(exePath: "*/\(tag)-gunicorn")])
        XCTAssertEqual(agent.selectedProcesses.map(\.pid), [script.processIdentifier])
        XCTAssertTrue(agent.selectedProcesses.first?.executable.contains("python3") == true, "the executable is the interpreter")
        XCTAssertEqual(agent.selectedProcesses.first?.resource.serviceName, "\(tag)-gunicorn", "named after the script")
        agent.stop()
        let byModule = try startAgent([SelectionRule(exePath: "*/\(tag)_uvicorn")])
        XCTAssertEqual(byModule.selectedProcesses.map(\.pid), [moduleProcess.processIdentifier])
        XCTAssertEqual(byModule.selectedProcesses.first?.resource.serviceName, "\(tag)_uvicorn", "named after the module")
        byModule.stop()
        // A rule's service name (--service-name, or the agent's OTEL_SERVICE_NAME) wins over the derived one.
        let named = try startAgent([SelectionRule(exePath: "*/\(tag)_uvicorn", serviceName: "shop")])
        XCTAssertEqual(named.selectedProcesses.first?.resource.serviceName, "shop")
    }
}
