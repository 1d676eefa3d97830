//! The dora node runner as a small binary of its own, so a dora deployment needs
//! neither the studio nor every model back end: it carries the runtime's utility
//! nodes plus the node families enabled as features of this crate (`sim`).
//! `vela dora node` (the `vela` binary built with `--features dora`) is the same
//! runner with every node family.

use tracing_subscriber::EnvFilter;

fn main() {
    let filter = EnvFilter::try_from_env("VELA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let mut registry = vela_runtime::Registry::with_builtins();
    vela_dora::probe::register(&mut registry);
    #[cfg(feature = "sim")]
    vela_sim::register(&mut registry);
    if let Err(e) = vela_dora::runner::main(&registry) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
