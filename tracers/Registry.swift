import TracerFramework

/// Every tracer the agent knows. Adding a tracer = adding its folder under tracers/ and one line here.
public enum TracerRegistry {
    public static let all: [any Tracer] = []
}
