//! Round trips of the wire types through their codec, and what decoding refuses.

use super::*;

fn job() -> Job {
    Job {
        v: VERSION,
        id: Uuid::now_v7(),
        operation: "build".into(),
        project: "shop".into(),
        command: Command::Shell("make".into()),
        args: vec!["-j2".into()],
        env: BTreeMap::from([("A".into(), "b".into())]),
        secrets: vec!["TOKEN".into()],
        workdir: Some("/src".into()),
        timeout_ms: Some(1000),
        kill_grace_ms: None,
        target: Target::Labels(BTreeMap::from([("env".into(), "prod".into())])),
        retry_on_lost: true,
        attempt: 1,
        created_at_ms: 5,
        queued_by: "me@host".into(),
        group: None,
        not_before_ms: Some(99),
        retry: Some(Retry {
            attempts: 3,
            on: vec![Status::Failed, Status::Lost],
            delay_ms: 30_000,
            exit_codes: vec![1, 75],
        }),
    }
}

#[test]
fn a_retry_names_the_next_attempt_only_for_what_it_covers() {
    let retry = Retry { attempts: 3, on: vec![Status::Failed, Status::Lost], delay_ms: 0, exit_codes: vec![75] };
    let failed = |code| Completed { exit_code: Some(code), ..Completed::without_exit(Status::Failed, String::new()) };
    assert_eq!(retry.next_attempt(1, &failed(75)), Some(2));
    assert_eq!(retry.next_attempt(1, &failed(1)), None, "exit 1 is not in exit_codes");
    assert_eq!(retry.next_attempt(3, &failed(75)), None, "three attempts in all");
    assert_eq!(retry.next_attempt(2, &Completed::without_exit(Status::Lost, String::new())), Some(3));
    assert_eq!(retry.next_attempt(1, &Completed::without_exit(Status::TimedOut, String::new())), None);
    assert_eq!(retry.next_attempt(1, &Completed::without_exit(Status::Cancelled, String::new())), None);
    assert_eq!(retry.next_attempt(u32::MAX, &failed(75)), None);
}

#[test]
fn job_round_trips() {
    let job = job();
    let bytes = encode(&job);
    assert_eq!(decode_job(&bytes, 1 << 20), Ok(job));
}

#[test]
fn every_event_kind_round_trips() {
    let bodies = vec![
        EventBody::Queued(Queued::of(&job())),
        EventBody::CancelRequested { by: "me".into(), force: true, reason: Some("superseded".into()) },
        EventBody::Accepted { hostname: "h".into(), heartbeat_ms: 5000 },
        EventBody::Started { pid: 7, argv: vec!["true".into()] },
        EventBody::Log {
            lines: vec![
                LogLine::from_bytes(Stream::Stdout, 1, b"hi", false),
                LogLine::from_bytes(Stream::Stderr, 2, &[0xff, 0x00], true),
            ],
        },
        EventBody::Heartbeat { interval_ms: 5000 },
        EventBody::Output { key: "k".into(), value: "v".into() },
        EventBody::Completed(Completed {
            status: Status::TimedOut,
            exit_code: Some(143),
            signal: Some(15),
            duration_ms: 9,
            outputs: BTreeMap::new(),
            error: Some("timed out".into()),
            retrying: Some(Retrying { attempt: 2, at_ms: 40, delay_ms: 30 }),
        }),
    ];
    for body in bodies {
        let event = Event { v: VERSION, job: Uuid::now_v7(), seq: 1, ts: 2, runner: "r".into(), attempt: 1, body };
        let bytes = encode(&event);
        assert_eq!(decode::<Event>(&bytes, "event"), Ok(event));
    }
}

#[test]
fn event_kind_leads_the_body() {
    let event = Event {
        v: VERSION,
        job: Uuid::nil(),
        seq: 3,
        ts: 4,
        runner: "r".into(),
        attempt: 1,
        body: EventBody::Heartbeat { interval_ms: 1 },
    };
    let value: serde_json::Value = serde_json::from_slice(&encode(&event)).expect("json");
    assert_eq!(value["body"]["kind"], "heartbeat");
    assert_eq!(value["body"]["data"]["interval_ms"], 1);
    assert_eq!(value["v"], 1);
}

#[test]
fn non_utf8_lines_keep_their_bytes() {
    let line = LogLine::from_bytes(Stream::Stdout, 0, &[b'a', 0xc3, 0x28], false);
    assert!(line.b64);
    assert_eq!(line.bytes().as_ref(), &[b'a', 0xc3, 0x28]);
}

#[test]
fn unknown_version_is_told_apart_from_bad_json() {
    let mut value = serde_json::to_value(job()).expect("json");
    value["v"] = 99.into();
    let bytes = serde_json::to_vec(&value).expect("json");
    assert_eq!(decode_job(&bytes, 1 << 20), Err(DecodeError::Version { found: 99 }));
    assert!(matches!(decode_job(b"{not json", 1 << 20), Err(DecodeError::Json(_))));
    assert_eq!(decode_job(b"{\"id\":1}", 1 << 20), Err(DecodeError::NoVersion));
    assert!(matches!(decode_job(b"{\"v\":1}", 1 << 20), Err(DecodeError::Invalid { what: "job", .. })));
    assert!(matches!(decode_job(&[b' '; 100], 10), Err(DecodeError::TooLarge { size: 100, limit: 10 })));
}

#[test]
fn empty_command_is_invalid() {
    let mut job = job();
    job.command = Command::Argv(vec![]);
    assert!(matches!(decode_job(&encode(&job), 1 << 20), Err(DecodeError::Invalid { .. })));
}

#[test]
fn unknown_builtins_and_commands_decode_round_trip_and_are_never_run() {
    let mut value = serde_json::to_value(job()).expect("json");
    value["command"] = serde_json::json!({"builtin": "frobnicate"});
    let bytes = serde_json::to_vec(&value).expect("json");
    let queued: Job = decode(&bytes, "job").expect("an unknown builtin decodes");
    assert_eq!(queued.command, Command::UnknownBuiltin("frobnicate".into()));
    assert_eq!(queued.command.unknown().as_deref(), Some("unknown builtin `frobnicate`"));
    assert_eq!(serde_json::to_value(&queued.command).expect("json"), value["command"]);
    let Err(DecodeError::Invalid { detail, .. }) = decode_job(&bytes, 1 << 20) else { panic!("run refused") };
    assert_eq!(detail, "unknown builtin `frobnicate`");
    value["command"] = serde_json::json!({"wasm": {"module": "x"}});
    let bytes = serde_json::to_vec(&value).expect("json");
    let later: Job = decode(&bytes, "job").expect("an unknown kind of command decodes");
    assert_eq!(later.command.unknown().as_deref(), Some("unknown kind of command `wasm`"));
    assert_eq!(serde_json::to_value(&later.command).expect("json"), value["command"]);
    assert!(decode_job(&bytes, 1 << 20).is_err());
    let noop: Command = serde_json::from_str(r#"{"builtin":"noop"}"#).expect("noop");
    assert_eq!(noop, Command::Builtin(Builtin::Noop));
    assert_eq!(serde_json::to_string(&noop).expect("json"), r#"{"builtin":"noop"}"#);
}

#[test]
fn an_unknown_event_kind_decodes_as_unknown_and_a_broken_known_one_does_not() {
    let id = Uuid::now_v7();
    let body = format!(
        r#"{{"v":1,"job":"{id}","seq":4,"ts":5,"runner":"r","attempt":1,"later":true,"body":{{"kind":"paused","data":{{"why":"x"}}}}}}"#
    );
    let event = decode_event(body.as_bytes()).expect("decodes");
    assert_eq!(event.seq, 4);
    assert_eq!(event.body, EventBody::Unknown { kind: "paused".into(), data: serde_json::json!({"why": "x"}) });
    let broken = format!(r#"{{"v":1,"job":"{id}","seq":4,"ts":5,"runner":"r","attempt":1,"body":{{"kind":"log"}}}}"#);
    assert!(matches!(decode_event(broken.as_bytes()), Err(DecodeError::Invalid { .. })));
    assert!(matches!(decode_event(b"{\"v\":2}"), Err(DecodeError::Version { found: 2 })));
}

#[test]
fn a_job_that_does_not_decode_still_names_its_id() {
    let id = Uuid::now_v7();
    let body = format!(r#"{{"v":1,"id":"{id}","attempt":3,"command":{{"builtin":"frobnicate"}}}}"#);
    assert!(decode_job(body.as_bytes(), 1 << 20).is_err());
    assert_eq!(probe_job_id(body.as_bytes()), Some((id, 3)));
    let body = format!(r#"{{"id":"{id}","attempt":"x"}}"#);
    assert_eq!(probe_job_id(body.as_bytes()), Some((id, 1)));
    assert_eq!(probe_job_id(b"{not json"), None);
    assert_eq!(probe_job_id(br#"{"id":"not a uuid"}"#), None);
}

#[test]
fn a_job_debug_shows_env_names_not_values() {
    let text = format!("{:?}", job());
    assert!(text.contains("env_keys: [\"A\"]") && text.contains("make"), "{text}");
    assert!(!text.contains("\"b\""), "{text}");
}

#[test]
fn shell_args_become_positional_parameters() {
    let cmd = Command::Shell("echo \"$@\"".into());
    assert_eq!(cmd.to_argv("op", &["a".into()]), vec!["sh", "-c", "echo \"$@\"", "op", "a"]);
    assert_eq!(Command::Argv(vec!["ls".into()]).to_argv("op", &["-l".into()]), vec!["ls", "-l"]);
}
