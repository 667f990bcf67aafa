//! Secrets never show: `--help` of every command names the variables that hold the broker
//! URL and the Glance token but never prints their values, and a broker password typed on the
//! command line (where every local user can read it) is refused without being echoed. Runs
//! the built binaries only; needs no service.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use snapq_tests::worker_process::binary;

const AMQP_PASSWORD: &str = "S3CRET-PW-x1";
const AMQP_URL: &str = "amqp://u:S3CRET-PW-x1@127.0.0.1:1/%2f";
const GLANCE_TOKEN: &str = "S3CRET-TOKEN-x2";
const FILE_TOKEN: &str = "S3CRET-FILE-x3";

/// A fresh directory under the system's temporary one, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("snapq-secrets-cli-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a temporary file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a workspace binary with only `env` (and PATH) in its environment.
fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary(name))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run {name} {args:?}: {e}"))
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

fn assert_no_secret(what: &str, shown: &str) {
    for secret in [AMQP_PASSWORD, GLANCE_TOKEN, FILE_TOKEN, "S3CRET"] {
        assert!(
            !shown.contains(secret),
            "{what} shows the secret {secret}:\n{shown}"
        );
    }
}

fn secret_env(token_file: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("SNAPQ_AMQP_URL", AMQP_URL.to_string()),
        ("SNAPQ_GLANCE_TOKEN", GLANCE_TOKEN.to_string()),
        ("SNAPQ_GLANCE_TOKEN_FILE", token_file.display().to_string()),
        ("SNAPQ_GLANCE_URL", "http://127.0.0.1:1".to_string()),
    ]
}

#[test]
fn help_of_every_command_names_the_secret_variables_but_never_shows_their_values() {
    let dir = TempDir::new();
    let token_file = dir.file("glance-token", &format!("{FILE_TOKEN}\n"));
    let env = secret_env(&token_file);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let commands: &[(&str, &[&str])] = &[
        ("snapq-worker", &["--help"]),
        ("snapq-worker", &["-h"]),
        ("snapq", &["--help"]),
        ("snapq", &["snapshot", "--help"]),
        ("snapq", &["snapshot", "-h"]),
        ("snapq", &["jobs", "--help"]),
        ("snapq", &["jobs", "list", "--help"]),
        ("snapq", &["bench", "--help"]),
    ];
    for (name, args) in commands {
        let output = run(name, args, &env);
        let shown = text(&output);
        let what = format!("{name} {}", args.join(" "));
        assert!(output.status.success(), "{what} failed:\n{shown}");
        assert_no_secret(&what, &shown);
    }
    // The long help of the commands that take the secrets names where they come from.
    for (name, args) in [
        ("snapq-worker", &["--help"][..]),
        ("snapq", &["snapshot", "--help"][..]),
        ("snapq", &["bench", "--help"][..]),
    ] {
        let shown = text(&run(name, args, &env));
        for needle in [
            "SNAPQ_AMQP_URL",
            "--amqp-url-file",
            "SNAPQ_GLANCE_TOKEN",
            "--glance-token-file",
        ] {
            assert!(
                shown.contains(needle),
                "{name} {args:?} lacks {needle}:\n{shown}"
            );
        }
        assert!(
            !shown.contains("--glance-token "),
            "{name} {args:?} still offers --glance-token:\n{shown}"
        );
    }
    let shown = text(&run("snapq", &["jobs", "--help"], &env));
    assert!(shown.contains("SNAPQ_AMQP_URL"), "{shown}");
}

#[test]
fn worker_refuses_a_broker_password_on_the_command_line_without_echoing_it() {
    let output = run(
        "snapq-worker",
        &["--amqp-url", "amqp://u:pw@127.0.0.1:1/%2f"],
        &[("SNAPQ_GLANCE_URL", "http://127.0.0.1:1")],
    );
    let shown = text(&output);
    assert!(!output.status.success(), "the worker accepted it:\n{shown}");
    assert!(shown.contains("--amqp-url"), "{shown}");
    assert!(shown.contains("SNAPQ_AMQP_URL"), "{shown}");
    assert!(!shown.contains("pw@"), "{shown}");
}

#[test]
fn producer_refuses_a_broker_password_on_the_command_line_without_echoing_it() {
    let output = run(
        "snapq",
        &["jobs", "--amqp-url=amqp://u:pw@127.0.0.1:1/%2f", "list"],
        &[],
    );
    let shown = text(&output);
    assert!(!output.status.success(), "snapq accepted it:\n{shown}");
    assert!(shown.contains("--amqp-url"), "{shown}");
    assert!(shown.contains("SNAPQ_AMQP_URL"), "{shown}");
    assert!(!shown.contains("pw@"), "{shown}");
}

#[test]
fn glance_token_flag_no_longer_exists() {
    let output = run(
        "snapq-worker",
        &["--glance-token", GLANCE_TOKEN],
        &[
            ("SNAPQ_AMQP_URL", AMQP_URL),
            ("SNAPQ_GLANCE_URL", "http://127.0.0.1:1"),
        ],
    );
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(shown.contains("--glance-token"), "{shown}");
    assert_no_secret("snapq-worker --glance-token", &shown);
}

#[test]
fn worker_without_a_broker_url_names_where_to_put_it() {
    let output = run(
        "snapq-worker",
        &[],
        &[("SNAPQ_GLANCE_URL", "http://127.0.0.1:1")],
    );
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(shown.contains("SNAPQ_AMQP_URL"), "{shown}");
    assert!(shown.contains("--amqp-url-file"), "{shown}");
}

#[test]
fn worker_given_the_glance_token_twice_names_both_sources_and_shows_neither() {
    let dir = TempDir::new();
    let token_file = dir.file("glance-token", &format!("{FILE_TOKEN}\n"));
    let env = secret_env(&token_file);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = run("snapq-worker", &[], &env);
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(shown.contains("SNAPQ_GLANCE_TOKEN"), "{shown}");
    assert!(shown.contains("--glance-token-file"), "{shown}");
    assert_no_secret("snapq-worker with two tokens", &shown);
}

#[test]
fn worker_with_an_unreadable_secret_file_names_the_option_and_the_path() {
    let dir = TempDir::new();
    let missing = dir.0.join("no-such-url-file");
    let missing = missing.display().to_string();
    let output = run(
        "snapq-worker",
        &["--amqp-url-file", &missing],
        &[("SNAPQ_GLANCE_URL", "http://127.0.0.1:1")],
    );
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(shown.contains("--amqp-url-file"), "{shown}");
    assert!(shown.contains(&missing), "{shown}");

    let empty = dir.file("empty-token", "\n").display().to_string();
    let output = run(
        "snapq-worker",
        &["--glance-token-file", &empty],
        &[
            ("SNAPQ_AMQP_URL", AMQP_URL),
            ("SNAPQ_GLANCE_URL", "http://127.0.0.1:1"),
        ],
    );
    let shown = text(&output);
    assert!(!output.status.success(), "{shown}");
    assert!(shown.contains("--glance-token-file"), "{shown}");
    assert!(shown.contains(&empty), "{shown}");
    assert_no_secret("snapq-worker with an empty token file", &shown);
}
