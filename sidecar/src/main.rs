//! enkf-sidecar: rotates the database credentials kept in AWS Secrets Manager and schedules
//! assimilation runs. The subcommands arrive with the sidecar issue; until then the binary
//! only reports what it is.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => println!("enkf-sidecar {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!(
                "enkf-sidecar {}: no subcommands yet",
                env!("CARGO_PKG_VERSION")
            );
            std::process::exit(2);
        }
    }
}
