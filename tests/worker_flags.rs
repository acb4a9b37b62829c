//! `runway-worker` refuses zero and absurd intervals at start, naming the flag.

use crate::support::binary;

#[tokio::test]
async fn a_zero_or_absurd_interval_is_refused_at_start_with_exit_64_naming_the_flag() {
    let cases = [
        ("--heartbeat", "0s", "from 100ms to 1h"),
        ("--heartbeat", "2h", "from 100ms to 1h"),
        ("--kill-grace", "1ns", "from 1ms to 1h"),
        ("--drain-timeout", "0s", "from 1ms to 7days"),
        ("--heartbeat", "soon", "from 100ms to 1h"),
    ];
    for (flag, value, expected) in cases {
        let output = tokio::process::Command::new(binary("runway-worker"))
            // Never reached: the flags are refused before any connection.
            .args(["--server", "amqp://127.0.0.1:1/", flag, value])
            .env_remove("RUNWAY_SERVER")
            .output()
            .await
            .expect("run runway-worker");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(expected), "{flag} {value}: {stderr}");
    }
}
