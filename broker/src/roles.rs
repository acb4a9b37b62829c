//! runway's roles as RabbitMQ permissions: for each role, the configure, write and read regexes
//! over one namespace's names, and the topic permissions on its events and control exchanges.
//!
//! It derives them from what each command declares, binds, publishes and consumes (see
//! `topology.rs`); it grants nothing itself. `rabbitmqctl` applies them; the CLI prints or runs
//! the commands.

use std::fmt;

use crate::topology::Topology;

/// What an account may do in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Queue jobs, follow and cancel them, read the history, ping runners.
    Submitter,
    /// Take jobs, publish runner events, answer pings.
    Runner,
    /// Read the history and ping runners; publish nothing about jobs.
    Observer,
    /// Declare (and delete) the topology; everything in the namespace.
    Admin,
    /// A submitter who also runs its own jobs inside its CLI (`runway run` against a server
    /// without `--remote`): the union of the submitter's and the runner's rights, since
    /// RabbitMQ gives a user one set of permissions per vhost.
    Developer,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Submitter, Role::Runner, Role::Observer, Role::Admin, Role::Developer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Runner => "runner",
            Role::Observer => "observer",
            Role::Admin => "admin",
            Role::Developer => "developer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three regexes of `rabbitmqctl set_permissions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// The two regexes of `rabbitmqctl set_topic_permissions` for one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPermissions {
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// Everything one role needs in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub permissions: Permissions,
    pub topics: Vec<TopicPermissions>,
}

/// Server-named queues (event, reply and control queues are all declared with an empty name).
const SERVER_NAMED: &str = r"amq\.gen-.*";
/// The default exchange: stream markers and ping answers are published through it.
const DEFAULT_EXCHANGE: &str = r"amq\.default";
/// Matches nothing (RabbitMQ's own idiom for "no access").
const NOTHING: &str = "^$";

/// `^(a|b|c)$`.
fn any_of(parts: &[String]) -> String {
    format!("^({})$", parts.join("|"))
}

/// What `role` needs in `topology`'s namespace.
///
/// RabbitMQ checks: declaring a queue needs configure on it (and, with a dead-letter exchange,
/// write on that and read on the queue); binding needs write on the queue and read on the
/// exchange; publishing needs write on the exchange; consuming needs read on the queue. Passive
/// declarations (the topology marker, stream readiness, queue depth) need nothing.
pub fn grant(topology: &Topology, role: Role) -> Grant {
    if role == Role::Developer {
        let (submitter, runner) = (grant(topology, Role::Submitter), grant(topology, Role::Runner));
        return Grant { role, ..submitter.union(&runner) };
    }
    // A namespace holds letters, digits, `-`, `_` and `.` (checked by `Topology::new`): only
    // the dot means something in a regex outside a class.
    let ns = topology.namespace().replace('.', r"\.");
    let name = |suffix: &str| format!(r"{ns}\.{suffix}");
    let server_named = SERVER_NAMED.to_owned();
    let default = DEFAULT_EXCHANGE.to_owned();
    let events = format!("{}.events", topology.namespace());
    let control = format!("{}.control", topology.namespace());
    // Runner event kinds and the kinds a submitter says about its own jobs.
    let runner_events = r"^job\.[^.]+\.(accepted|started|log|heartbeat|output|completed)$".to_owned();
    let submitter_events = r"^job\.[^.]+\.(queued|cancel_requested)$".to_owned();
    let everything = ".*".to_owned();
    let (permissions, topics) = match role {
        Role::Submitter => (
            // A concurrency group's queue is declared and bound by the CLI that queues its first
            // job (the job must route at once), and announced on the control exchange.
            // A delayed job's holding queue is declared and bound by whoever queues it.
            Permissions {
                configure: any_of(&[server_named.clone(), name(r"group\..+"), name("delays"), name(r"delay\..+")]),
                write: any_of(&[
                    server_named.clone(),
                    name("jobs"),
                    name("delays"),
                    name(r"delay\..+"),
                    name("events"),
                    name("control"),
                    name("dead"),
                    name(r"group\..+"),
                    default,
                ]),
                read: any_of(&[
                    server_named,
                    name("events"),
                    name("history"),
                    name("index"),
                    name("jobs"),
                    name(r"group\..+"),
                    name("delays"),
                    name(r"delay\..+"),
                ]),
            },
            vec![
                TopicPermissions { exchange: events, write: submitter_events, read: everything.clone() },
                TopicPermissions { exchange: control, write: "^(cancel|ping|group)$".to_owned(), read: everything },
            ],
        ),
        Role::Runner => {
            // A runner queues the next attempt of a job that retries, through the holding queues when
            // it waits first, so it writes to the jobs exchange too.
            let own = [
                name(r"runner\..+"),
                name(r"jobs\.labels\..+"),
                name(r"group\..+"),
                name("delays"),
                name(r"delay\..+"),
                server_named,
            ];
            let mut write = own.to_vec();
            write.extend([name("events"), name("dead"), name("jobs"), default]);
            let mut read = own.to_vec();
            read.extend([
                name(r"jobs\.any"),
                name("jobs"),
                name("control"),
                name("cancels"),
                name("groups"),
                name("index"),
            ]);
            (
                Permissions { configure: any_of(&own), write: any_of(&write), read: any_of(&read) },
                vec![
                    TopicPermissions { exchange: events, write: runner_events, read: everything.clone() },
                    TopicPermissions { exchange: control, write: NOTHING.to_owned(), read: everything },
                ],
            )
        }
        Role::Observer => (
            Permissions {
                configure: any_of(std::slice::from_ref(&server_named)),
                write: any_of(&[server_named.clone(), name("control"), default]),
                read: any_of(&[server_named, name("history"), name("index")]),
            },
            vec![
                TopicPermissions { exchange: events, write: NOTHING.to_owned(), read: everything.clone() },
                TopicPermissions { exchange: control, write: "^ping$".to_owned(), read: everything },
            ],
        ),
        Role::Developer => unreachable!("the developer role is the union of two others, returned above"),
        Role::Admin => {
            let all = any_of(&[name(".*"), server_named, default]);
            (
                Permissions { configure: all.clone(), write: all.clone(), read: all },
                vec![
                    TopicPermissions { exchange: events, write: everything.clone(), read: everything.clone() },
                    TopicPermissions { exchange: control, write: everything.clone(), read: everything },
                ],
            )
        }
    };
    Grant { role, permissions, topics }
}

/// Either regex: `^(a)$|^(b)$`, both already anchored.
fn either(a: &str, b: &str) -> String {
    if a == NOTHING {
        return b.to_owned();
    }
    if b == NOTHING || a == b {
        return a.to_owned();
    }
    format!("{a}|{b}")
}

impl Grant {
    /// The rights of both grants (the same exchanges' topic permissions, joined).
    fn union(&self, other: &Grant) -> Grant {
        let permissions = Permissions {
            configure: either(&self.permissions.configure, &other.permissions.configure),
            write: either(&self.permissions.write, &other.permissions.write),
            read: either(&self.permissions.read, &other.permissions.read),
        };
        let topics = self
            .topics
            .iter()
            .map(|topic| match other.topics.iter().find(|o| o.exchange == topic.exchange) {
                Some(o) => TopicPermissions {
                    exchange: topic.exchange.clone(),
                    write: either(&topic.write, &o.write),
                    read: either(&topic.read, &o.read),
                },
                None => topic.clone(),
            })
            .collect();
        Grant { role: self.role, permissions, topics }
    }

    /// The `rabbitmqctl` argument lists that apply this grant to `user` in `vhost`.
    pub fn rabbitmqctl_args(&self, user: &str, vhost: &str) -> Vec<Vec<String>> {
        let owned = |parts: &[&str]| parts.iter().map(|part| (*part).to_owned()).collect::<Vec<_>>();
        let permissions = &self.permissions;
        let mut commands = vec![owned(&[
            "set_permissions",
            "-p",
            vhost,
            user,
            &permissions.configure,
            &permissions.write,
            &permissions.read,
        ])];
        for topic in &self.topics {
            commands.push(owned(&[
                "set_topic_permissions",
                "-p",
                vhost,
                user,
                &topic.exchange,
                &topic.write,
                &topic.read,
            ]));
        }
        commands
    }
}

/// One argument quoted for a POSIX shell, only where it needs it.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@".contains(&b));
    if plain { arg.to_owned() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        regex_automata::meta::Regex::new(pattern).expect("a valid regex").is_match(name)
    }

    #[test]
    fn a_submitter_may_queue_and_follow_but_not_take_jobs() {
        let grant = grant(&Topology::new("ci.x").expect("valid"), Role::Submitter);
        let p = &grant.permissions;
        assert!(matches(&p.write, "ci.x.jobs") && matches(&p.write, "ci.x.events"));
        assert!(matches(&p.configure, "amq.gen-abc") && !matches(&p.configure, "ci.x.runner.r1"));
        assert!(!matches(&p.read, "ci.x.jobs.any") && !matches(&p.read, "ci.x.runner.r1"));
        // The namespace's dot is a dot, not "any character".
        assert!(!matches(&p.write, "cixx.jobs"));
        let events = &grant.topics[0];
        assert!(matches(&events.write, "job.0198.queued") && !matches(&events.write, "job.0198.completed"));
    }

    #[test]
    fn a_runner_may_take_jobs_report_them_and_queue_their_retries_but_not_control_runners() {
        let grant = grant(&Topology::new("ns").expect("valid"), Role::Runner);
        let p = &grant.permissions;
        assert!(matches(&p.read, "ns.jobs.any") && matches(&p.read, "ns.runner.r1"));
        assert!(matches(&p.configure, "ns.runner.r1") && matches(&p.configure, "ns.jobs.labels.a=b"));
        // The next attempt of a job that retries is queued by the runner of the last one.
        assert!(
            matches(&p.write, "ns.jobs") && matches(&p.write, "ns.delays") && matches(&p.configure, "ns.delay.30000")
        );
        assert!(!matches(&p.write, "ns.control"));
        assert!(!matches(&p.configure, "ns.jobs.any") && !matches(&p.configure, "ns.events"));
        assert!(matches(&grant.topics[0].write, "job.0198.completed"));
        assert!(!matches(&grant.topics[0].write, "job.0198.queued"));
    }

    #[test]
    fn an_observer_publishes_only_pings() {
        let grant = grant(&Topology::new("ns").expect("valid"), Role::Observer);
        assert!(!matches(&grant.permissions.write, "ns.jobs") && !matches(&grant.permissions.write, "ns.events"));
        assert!(matches(&grant.topics[1].write, "ping") && !matches(&grant.topics[1].write, "cancel"));
    }

    #[test]
    fn a_developer_has_a_submitters_and_a_runners_rights() {
        let grant = grant(&Topology::new("ns").expect("valid"), Role::Developer);
        let p = &grant.permissions;
        assert!(matches(&p.write, "ns.jobs") && matches(&p.read, "ns.jobs.any"));
        assert!(matches(&p.configure, "ns.runner.cli-1") && !matches(&p.configure, "ns.events"));
        assert!(matches(&grant.topics[0].write, "job.0198.queued"));
        assert!(matches(&grant.topics[0].write, "job.0198.completed"));
        assert!(matches(&grant.topics[1].write, "cancel") && !matches(&grant.topics[1].write, "shutdown"));
    }

    #[test]
    fn commands_are_quoted_for_a_shell() {
        let grant = grant(&Topology::new("ns").expect("valid"), Role::Admin);
        let commands = grant.rabbitmqctl_args("ci", "/");
        assert_eq!(commands.len(), 3);
        assert_eq!(commands[0][..4], ["set_permissions", "-p", "/", "ci"]);
        assert_eq!(shell_quote("^(a|b)$"), "'^(a|b)$'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("ns.events"), "ns.events");
    }
}
