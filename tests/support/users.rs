//! RabbitMQ users for one test, made with `rabbitmqctl` and given a runway role with
//! `runway roles --apply`; deleted when the guard drops, also when the test failed.
//!
//! It needs to run where `rabbitmqctl` may talk to the broker (as root or the rabbitmq user).

use std::process::Command;

use super::{amqp_url, binary};

/// One user with one role in a namespace; deleted on drop.
pub struct User {
    pub name: String,
    password: String,
}

impl User {
    /// Create a user with a fresh password and grant it `role` in `namespace`.
    pub fn with_role(namespace: &str, role: &str) -> User {
        let name = format!("{role}-{}", uuid::Uuid::now_v7().simple());
        let password = uuid::Uuid::now_v7().simple().to_string();
        rabbitmqctl(&["add_user", &name, &password]);
        let user = User { name, password };
        let granted = Command::new(binary("runway"))
            .args(["roles", role, "--user", &user.name, "--namespace", namespace, "--apply"])
            .output()
            .expect("run runway roles");
        assert!(granted.status.success(), "runway roles failed: {}", String::from_utf8_lossy(&granted.stderr));
        user
    }

    /// The broker URL that logs in as this user.
    pub fn url(&self) -> String {
        let url = amqp_url();
        let (scheme, rest) = url.split_once("://").expect("AMQP_URL has a scheme");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{}:{}@{host}", self.name, self.password)
    }

    /// `--server URL --namespace NS` for this user.
    pub fn flags(&self, namespace: &str) -> Vec<String> {
        vec!["--server".into(), self.url(), "--namespace".into(), namespace.to_owned()]
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_user", &self.name]).output();
    }
}

fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl").args(args).output().expect("run rabbitmqctl");
    assert!(output.status.success(), "rabbitmqctl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
}
