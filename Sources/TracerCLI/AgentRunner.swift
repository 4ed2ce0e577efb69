import ArgumentParser
import BPFRuntime
import Dispatch
import Foundation
import Logging
import TracerFramework
import Tracers

/// Runs the agent until SIGINT or SIGTERM, then detaches everything, flushes the sinks and exits 0.
struct AgentRunner {
    let options: RunOptions

    func run() throws {
        try CapabilityCheck.run(enforce: options.capabilities.enforceCapabilities)
        let file = try options.config.map { path in
            do { return try ConfigurationFile(path: path) } catch { throw ValidationError("\(error)") }
        }
        let selection = try options.selection(file: file)
        let kernelTracerList = try options.kernelTracerList(file: file)
        let filePathPrefixes = try options.filePathPrefixes(file: file, tracers: kernelTracerList)
        let level = try options.level(file: file)
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "tracer")
        let outputs = try Outputs(options: options, file: file, logger: logger)
        let features = KernelFeatures.detect()
        let propagation = try options.contextPropagationMode()
        let tracers = TracerRegistry.tracers(contextPropagation: propagation?.writesGoRequests ?? false, features: features,
                                             databaseQueryText: try options.databaseQueryText(file: file))
        let channel = try options.channel(features: features)
        if case .perfBuffer(let pages) = channel.transport {
            logger.info("events through perf buffers (\(pages) pages per CPU)\(features.isAvailable(.ringBuffer) ? "" : ": this kernel has no BPF ring buffer (5.8+)")")
        }
        let agent = try Agent(.init(selection: selection, tracers: tracers, sinks: outputs.sinks, channel: channel,
                                    logger: logger, features: features, captureHooks: try options.captureHooks(),
                                    networkPropagation: propagation?.insertsIntoNetworkRequests ?? false))
        outputs.observe(agent)
        let objectPaths = options.objects + (file?.objects ?? [])
        var objects: ObjectsBesideAgent?
        if !objectPaths.isEmpty {
            do { objects = try ObjectsBesideAgent(paths: objectPaths) } catch { throw ValidationError(error.description) }
            objects?.summary.forEach { logger.info("\($0)") }
        }
        let flowMetrics = options.networkFlows ? startFlowMetrics(outputs: outputs, logger: logger) : nil
        let kernelTracers = kernelTracerList.isEmpty ? nil
            : KernelTracersBesideAgent(tracers: kernelTracerList, pathPrefixes: filePathPrefixes, format: outputs.printFormat,
                                       resource: outputs.agentResource, logger: logger,
                                       resourceOf: { pid in agent.selectedProcesses.first { $0.pid == pid }?.resource },
                                       selection: { agent.selectedProcesses.map(\.pid) })
        if let kernelTracers { outputs.observe(kernelTracers) }
        let finished = DispatchSemaphore(value: 0)
        let signals = SignalHandlers { _ in finished.signal() }
        try agent.start()
        if let objects { try outputs.observe(objects) }
        let rules = selection.rules.count
        logger.info("tracing: \(rules) selection rule\(rules == 1 ? "" : "s"), \(agent.selectedProcesses.count) processes selected now; SIGINT or SIGTERM stops")
        finished.wait()
        logger.info("stopping: detaching probes and flushing spans")
        agent.stop()
        objects?.stop()
        flowMetrics?.stop()
        kernelTracers?.stop()
        outputs.shutdown(timeout: .seconds(2))
        let metrics = agent.metricsSnapshot
        logger.info("stopped: \(metrics.spans) spans, \(metrics.events) events, \(metrics.eventsDroppedUserspace) dropped in user space, \(metrics.eventsDroppedKernel) dropped in the kernel")
        signals.cancel()
    }

    /// Flow accounting for `--network-flows`; when it cannot start, one line says why and the agent carries on.
    private func startFlowMetrics(outputs: Outputs, logger: Logger) -> FlowMetrics? {
        do {
            let flows = try FlowAccounting()
            let metrics = FlowMetrics(flows: flows)
            outputs.observe(metrics)
            metrics.start()
            flows.start()
            logger.info("network flows: \(flows.hooks) (\(flows.hookReason))")
            return metrics
        } catch {
            logger.error("network flows off: \(error)")
            return nil
        }
    }
}
