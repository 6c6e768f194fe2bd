//! Deterministic engine + sim tests: in-memory store, virtual clock, no sockets, no sleeps.
