import TracerFramework

/// The BPF programs of the tracers (`tracers/NAME/NAME.bpf.c`), compiled and embedded at build time by
/// `BPFEmbedPlugin`: each becomes a nested enum (e.g. `Tracers.Http`) with the object and name constants.
public enum Tracers {}

/// Every tracer the agent knows. Adding a tracer = adding its folder under tracers/ and one line here.
public enum TracerRegistry {
    public static let all: [any Tracer] = [HTTPTracer()]
}
