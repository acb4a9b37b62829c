//! The values of the project file that a derive cannot read with a useful error: `run` (a
//! shell string, an argv array or a builtin), durations and `target`, each with a hand-written
//! visitor whose message says what to write instead.
//!
//! They read a value's shape only; `SourceFile` in `project.rs` checks what it says (a duration's
//! syntax, a runner id, label names) and reports where it is written.

use std::collections::BTreeMap;
use std::fmt;

use runway_broker::protocol::{Builtin, Command};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::TARGET_EXAMPLES;

/// The `run` value: a shell string or an argv array. A hand-written visitor rather than an
/// untagged enum, whose error ("data did not match any variant") says nothing useful.
pub(super) struct Run(pub(super) Command);

impl<'de> Deserialize<'de> for Run {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Run, D::Error> {
        struct RunVisitor;

        impl<'de> Visitor<'de> for RunVisitor {
            type Value = Run;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command string, an array of strings, or { builtin = \"noop\" }")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Run, E> {
                Ok(Run(Command::Shell(value.to_owned())))
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Run, M::Error> {
                let mut builtin = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "builtin" {
                        return Err(de::Error::unknown_field(&key, &["builtin"]));
                    }
                    let name: String = map.next_value()?;
                    let known = Builtin::ALL.into_iter().find(|builtin| builtin.name() == name);
                    let Some(known) = known else {
                        let names: Vec<&str> = Builtin::ALL.iter().map(|builtin| builtin.name()).collect();
                        return Err(de::Error::custom(format!(
                            "unknown builtin `{name}`, expected one of: {}",
                            names.join(", ")
                        )));
                    };
                    builtin = Some(known);
                }
                builtin.map(|builtin| Run(Command::Builtin(builtin))).ok_or_else(|| de::Error::missing_field("builtin"))
            }

            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Run, S::Error> {
                let mut argv = Vec::new();
                while let Some(Argument(argument)) = seq.next_element()? {
                    argv.push(argument);
                }
                Ok(Run(Command::Argv(argv)))
            }
        }

        deserializer.deserialize_any(RunVisitor)
    }
}

/// One element of a `run` array.
struct Argument(String);

impl<'de> Deserialize<'de> for Argument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Argument, D::Error> {
        struct ArgumentVisitor;

        impl Visitor<'_> for ArgumentVisitor {
            type Value = Argument;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (each element of a `run` array is one argument)")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<Argument, E> {
                Ok(Argument(value.to_owned()))
            }
        }

        deserializer.deserialize_any(ArgumentVisitor)
    }
}

/// A duration as written, parsed by [`SourceFile::duration`] so the error can name the key.
pub(super) struct DurationText(pub(super) String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DurationText, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = DurationText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration string such as "90s", "30m" or "1h 30m""#)
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<DurationText, E> {
                Ok(DurationText(value.to_owned()))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// `target` as written, before its runner id or labels are checked. The parts keep their
/// positions so a bad id or label is reported where it is written.
pub(super) enum TargetSection {
    Any,
    Runner(Spanned<String>),
    Labels(Spanned<BTreeMap<Spanned<String>, Spanned<String>>>),
}

impl<'de> Deserialize<'de> for TargetSection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TargetSection, D::Error> {
        struct TargetVisitor;

        impl<'de> Visitor<'de> for TargetVisitor {
            type Value = TargetSection;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a target: {TARGET_EXAMPLES}")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<TargetSection, E> {
                if value == "any" {
                    Ok(TargetSection::Any)
                } else {
                    Err(E::custom(format!("invalid target \"{}\", expected {TARGET_EXAMPLES}", value.escape_debug())))
                }
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<TargetSection, M::Error> {
                let mut runner = None;
                let mut labels = None;
                while let Some(key) = map.next_key()? {
                    match key {
                        TargetKey::Runner => runner = Some(map.next_value()?),
                        TargetKey::Labels => labels = Some(map.next_value()?),
                    }
                }
                match (runner, labels) {
                    (Some(runner), None) => Ok(TargetSection::Runner(runner)),
                    (None, Some(labels)) => Ok(TargetSection::Labels(labels)),
                    (Some(_), Some(_)) => Err(de::Error::custom(format!(
                        "a target names `runner` or `labels`, not both, expected {TARGET_EXAMPLES}"
                    ))),
                    (None, None) => Err(de::Error::custom(format!("empty target, expected {TARGET_EXAMPLES}"))),
                }
            }
        }

        deserializer.deserialize_any(TargetVisitor)
    }
}

/// A key of a `target` table. Its own type, so an unknown key is reported at the key itself and
/// as part of the target rather than of the operation.
enum TargetKey {
    Runner,
    Labels,
}

impl<'de> Deserialize<'de> for TargetKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TargetKey, D::Error> {
        let key = String::deserialize(deserializer)?;
        match key.as_str() {
            "runner" => Ok(TargetKey::Runner),
            "labels" => Ok(TargetKey::Labels),
            other => {
                Err(de::Error::custom(format!("unknown key `{other}` in `target`, expected `runner` or `labels`")))
            }
        }
    }
}
