//! Every example's first line of `main`: output piped into a reader that
//! stops early (`train_vit | head -1`) ends the example quietly.

/// `println!` panics when stdout is a pipe whose reader has gone (`| head`):
/// Rust ignores SIGPIPE, so the write fails with EPIPE and the macro panics
/// with "failed printing to stdout: Broken pipe". Nobody is reading any
/// more, so that panic ends the process quietly with status 0 instead of a
/// panic message; every other panic is reported as before.
pub fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && (message.contains("Broken pipe") || message.contains("os error 32")) {
            std::process::exit(0);
        }
        default(info);
    }));
}
