//! Log set-up shared by the binaries: plain text on stderr (coloured only on a terminal),
//! filtered by `RUST_LOG`, or by the binary's own default when that is unset.

/// Installs the global subscriber; `default_filter` applies when `RUST_LOG` is unset or invalid.
pub fn init(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
}
