/// The BPF programs of `bpf/`, compiled and embedded at build time by `BPFEmbedPlugin`:
/// each `NAME.bpf.c` becomes a nested enum (e.g. `BPFPrograms.Selftest`) holding the object and
/// constants for its programs, maps and globals.
public enum BPFPrograms {}
