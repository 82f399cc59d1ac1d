//! ember's server (built in its own issue).
