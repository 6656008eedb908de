//! Standard output for every command: a reader that went away (`growthmesh quarantine list | head -n 1`) ends the
//! process quietly with status 0, as ripgrep does, instead of the panic `println!` gives on a closed pipe.

use std::io::Write as _;

/// Writes `text` to stdout as it is.
pub fn write(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        gone(&error);
    }
}

/// Writes `line` and a newline to stdout.
pub fn line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "{line}") {
        gone(&error);
    }
}

/// Ends the process when stdout's reader is gone; any other write error is reported once on stderr, and the
/// process ends with the I/O failure status (nothing more can be printed).
fn gone(error: &std::io::Error) -> ! {
    if error.kind() != std::io::ErrorKind::BrokenPipe {
        let _ = writeln!(std::io::stderr(), "error: writing to stdout: {error}");
        std::process::exit(i32::from(crate::exit::FAILURE));
    }
    std::process::exit(0)
}

/// `println!` for command output, through [`line`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::line(&format!($($arg)*))
    };
}
