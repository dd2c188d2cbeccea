//! A progress bar for long commands: redrawn in place (`\r`) on a terminal, plain lines
//! when standard error is a pipe or a file (CI logs), nothing with `--json`.

use std::io::{IsTerminal, Write};

const WIDTH: usize = 30;

pub struct Progress {
    total: usize,
    tty: bool,
    quiet: bool,
}

impl Progress {
    pub fn new(total: usize, quiet: bool) -> Self {
        Progress {
            total,
            tty: std::io::stderr().is_terminal(),
            quiet,
        }
    }

    /// Reports that `done` of `total` steps are finished, the last one described by `what`.
    pub fn step(&mut self, done: usize, what: &str) {
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{}", bar(done, self.total, what));
        } else {
            let _ = writeln!(err, "[{done}/{}] {what}", self.total);
        }
        let _ = err.flush();
    }

    pub fn finish(&mut self) {
        if self.tty && !self.quiet {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// `[#########.....................] 3/10 hook: 12 replayed`
fn bar(done: usize, total: usize, what: &str) -> String {
    let filled = (done.min(total) * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    format!(
        "[{}{}] {done}/{total} {what}",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bar_fills_in_proportion() {
        assert!(super::bar(0, 4, "a").starts_with(&format!("[{}]", ".".repeat(30))));
        assert!(super::bar(2, 4, "b").starts_with(&format!(
            "[{}{}] 2/4 b",
            "#".repeat(15),
            ".".repeat(15)
        )));
        assert!(super::bar(4, 4, "c").starts_with(&format!("[{}]", "#".repeat(30))));
        assert!(super::bar(0, 0, "").starts_with(&format!("[{}]", "#".repeat(30))));
    }
}
