import TracerFramework

/// The BPF programs of the tracers, compiled and embedded at build time by `BPFEmbedPlugin`: each
/// `tracers/NAME/NAME.bpf.c` becomes a nested enum (e.g. `Tracers.GoNethttp`) with its object and name constants.
public enum Tracers {}

/// Every tracer the agent knows. Adding a tracer = adding its folder under tracers/ and one line here.
public enum TracerRegistry {
    public static let all: [any Tracer] = [
        GoNetHTTPTracer(),
    ]
}
