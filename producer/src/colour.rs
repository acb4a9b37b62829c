//! Whether runway may colour what it writes: only on a terminal, and never when `NO_COLOR` is
//! set to anything but the empty string (no-color.org). clap follows the same rule for help and
//! usage errors on its own.
//!
//! It decides; it colours nothing itself.

use std::io::IsTerminal as _;

/// Whether output to stderr may carry colours.
pub fn on_stderr() -> bool {
    allowed(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

/// The rule, apart from the process: a terminal, and no non-empty `NO_COLOR`.
fn allowed(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// `text` in `style` when `colour` says so, else as it is.
pub fn paint(text: &str, style: anstyle::Style, colour: bool) -> String {
    if colour { format!("{style}{text}{style:#}") } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(allowed(true, None));
        assert!(allowed(true, Some("".as_ref())), "an empty NO_COLOR does not count");
        assert!(!allowed(true, Some("1".as_ref())));
        assert!(!allowed(false, None));
    }

    #[test]
    fn painting_is_escape_free_when_colour_is_off() {
        let green = anstyle::AnsiColor::Green.on_default();
        assert_eq!(paint("ok", green, false), "ok");
        assert!(paint("ok", green, true).starts_with('\x1b'));
    }
}
