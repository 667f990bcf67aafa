//! Command-line/environment settings shared by the producer and the worker. Each flag can
//! also come from the `SNAPQ_*` variable named beside it; values are validated once, here.
//!
//! Secrets (the broker password, the Glance token) never travel on the command line, where
//! every local user can read them (`ps`, `/proc/<pid>/cmdline`), and never show in `--help`,
//! `Debug` output, logs or errors. They come from the environment or from a file:
//!
//! - the broker URL from `SNAPQ_AMQP_URL` or the file named by `--amqp-url-file`
//!   (`SNAPQ_AMQP_URL_FILE`); `--amqp-url` on the command line is refused when the URL holds a
//!   password. Read it through [`AmqpArgs::resolve`].
//! - the Glance token from `SNAPQ_GLANCE_TOKEN` or the file named by `--glance-token-file`
//!   (`SNAPQ_GLANCE_TOKEN_FILE`); there is no flag for the token itself. Read it through
//!   [`GlanceArgs::config`].

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches};

use crate::amqp::{redact_url, TopologyConfig};
use crate::glance::{GlanceConfig, LocationApi};
use crate::keystone::{Credentials, KeystoneConfig};
use crate::rbd::CephConfig;

/// clap id of `--amqp-url`, whose value source decides whether a password is allowed.
const AMQP_URL_ID: &str = "amqp-url";
/// The only variable the Glance token is read from (besides a file).
pub const GLANCE_TOKEN_ENV: &str = "SNAPQ_GLANCE_TOKEN";
/// Longest secret file read: a mistyped path to a huge file must not eat the memory.
const SECRET_FILE_LIMIT: u64 = 64 * 1024;

/// A setting that cannot be used. The messages name the options and files involved, never a
/// secret's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A URL with a password was given as `--amqp-url` on the command line.
    #[error(
        "{option} holds a password, and the command line is visible to every local user \
         (ps, /proc/<pid>/cmdline): put the URL in SNAPQ_AMQP_URL or in a file named by \
         --amqp-url-file instead"
    )]
    PasswordOnCommandLine { option: &'static str },
    /// No source for a required secret.
    #[error("{what} is not set: {hint}")]
    Missing {
        what: &'static str,
        hint: &'static str,
    },
    /// Two sources for one secret; which one wins would be a guess.
    #[error("{what} is given twice, by {first} and by {second}: give only one")]
    Conflict {
        what: &'static str,
        first: &'static str,
        second: &'static str,
    },
    /// The file named by `option` cannot be read.
    #[error("{option} '{}': cannot read the file: {error}", .path.display())]
    UnreadableFile {
        option: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// The file named by `option` holds nothing but whitespace.
    #[error("{option} '{}': the file is empty", .path.display())]
    EmptyFile { option: &'static str, path: PathBuf },
    /// The file named by `option` is longer than any secret.
    #[error("{option} '{}': the file is longer than {limit} bytes; is it the right file?", .path.display())]
    FileTooLong {
        option: &'static str,
        path: PathBuf,
        limit: u64,
    },
    /// An environment variable holding a secret is not UTF-8.
    #[error("{name} is not valid UTF-8")]
    NotUnicode { name: &'static str },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The flags of [`AmqpArgs`], as clap parses them.
#[derive(Clone, clap::Args)]
struct AmqpFlags {
    /// Broker URL, e.g. amqp://user:password@host:5672/%2f. With a password, set it in the
    /// environment or use --amqp-url-file: on the command line a password is refused. Never
    /// logged.
    #[arg(
        id = AMQP_URL_ID,
        long = "amqp-url",
        env = "SNAPQ_AMQP_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    url: Option<String>,
    /// File holding the broker URL (surrounding whitespace ignored), instead of SNAPQ_AMQP_URL.
    #[arg(
        long = "amqp-url-file",
        env = "SNAPQ_AMQP_URL_FILE",
        value_name = "PATH"
    )]
    url_file: Option<PathBuf>,
    /// oslo.messaging control_exchange the requests are published to.
    #[arg(long, env = "SNAPQ_EXCHANGE", default_value = "openstack")]
    exchange: String,
    /// Declare the request exchange durable (must match oslo's amqp_durable_queues).
    #[arg(long, env = "SNAPQ_EXCHANGE_DURABLE", default_value_t = false)]
    exchange_durable: bool,
    /// oslo topic snapq serves (routing key and work queue name).
    #[arg(long, env = "SNAPQ_TOPIC", default_value = "snapq")]
    topic: String,
    /// Deliveries of one request before RabbitMQ dead-letters it.
    #[arg(long, env = "SNAPQ_DELIVERY_LIMIT", default_value_t = 5)]
    delivery_limit: u32,
    /// PEM file of CA certificates to trust for an amqps:// broker (beside the system's).
    #[arg(
        id = "amqp-ca-file",
        long = "amqp-ca-file",
        env = "SNAPQ_AMQP_CA_FILE",
        value_name = "PATH"
    )]
    ca_file: Option<PathBuf>,
}

/// Where RabbitMQ is and which names snapq uses on it. The broker URL is read through
/// [`AmqpArgs::resolve`]; `Debug` shows it without its password.
#[derive(Clone)]
pub struct AmqpArgs {
    url: Option<String>,
    url_file: Option<PathBuf>,
    /// Whether `url` came from the command line (where a password is refused).
    url_on_command_line: bool,
    pub exchange: String,
    pub exchange_durable: bool,
    pub topic: String,
    pub delivery_limit: u32,
    pub ca_file: Option<PathBuf>,
}

impl AmqpArgs {
    /// The PEM text of `--amqp-ca-file`, if set.
    pub fn ca_pem(&self) -> Result<Option<String>, ConfigError> {
        self.ca_file
            .as_deref()
            .map(|path| crate::tls::read_ca_pem("--amqp-ca-file (SNAPQ_AMQP_CA_FILE)", path))
            .transpose()
            .map_err(ConfigError::from)
    }

    fn from_flags(flags: AmqpFlags, url_on_command_line: bool) -> AmqpArgs {
        AmqpArgs {
            url: flags.url,
            url_file: flags.url_file,
            url_on_command_line,
            exchange: flags.exchange,
            exchange_durable: flags.exchange_durable,
            topic: flags.topic,
            delivery_limit: flags.delivery_limit,
            ca_file: flags.ca_file,
        }
    }

    fn to_flags(&self) -> AmqpFlags {
        AmqpFlags {
            url: self.url.clone(),
            url_file: self.url_file.clone(),
            exchange: self.exchange.clone(),
            exchange_durable: self.exchange_durable,
            topic: self.topic.clone(),
            delivery_limit: self.delivery_limit,
            ca_file: self.ca_file.clone(),
        }
    }

    /// The broker URL, from exactly one of `SNAPQ_AMQP_URL` (or `--amqp-url` without a
    /// password) and the file named by `--amqp-url-file`.
    pub fn resolve(&self) -> Result<String, ConfigError> {
        const WHAT: &str = "the broker URL";
        const BY_URL: &str = "--amqp-url/SNAPQ_AMQP_URL";
        const BY_FILE: &str = "--amqp-url-file/SNAPQ_AMQP_URL_FILE";
        let url = non_empty(self.url.as_deref());
        if self.url_on_command_line && url.is_some_and(has_password) {
            return Err(ConfigError::PasswordOnCommandLine {
                option: "--amqp-url",
            });
        }
        match (url, non_empty_path(self.url_file.as_deref())) {
            (Some(_), Some(_)) => Err(ConfigError::Conflict {
                what: WHAT,
                first: BY_URL,
                second: BY_FILE,
            }),
            (Some(url), None) => Ok(url.to_string()),
            (None, Some(path)) => read_secret_file("--amqp-url-file", path),
            (None, None) => Err(ConfigError::Missing {
                what: WHAT,
                hint: "set SNAPQ_AMQP_URL, or name a file holding it with --amqp-url-file \
                       (SNAPQ_AMQP_URL_FILE)",
            }),
        }
    }

    pub fn topology(&self) -> TopologyConfig {
        TopologyConfig {
            exchange: self.exchange.clone(),
            exchange_durable: self.exchange_durable,
            topic: self.topic.clone(),
            delivery_limit: self.delivery_limit,
        }
    }
}

/// Shows the broker URL without its password.
impl fmt::Debug for AmqpArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpArgs")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("url_file", &self.url_file)
            .field("url_on_command_line", &self.url_on_command_line)
            .field("exchange", &self.exchange)
            .field("exchange_durable", &self.exchange_durable)
            .field("topic", &self.topic)
            .field("delivery_limit", &self.delivery_limit)
            .finish()
    }
}

/// Whether `--amqp-url` in these matches was typed on the command line.
fn url_source_is_command_line(matches: &ArgMatches) -> Option<bool> {
    matches
        .value_source(AMQP_URL_ID)
        .map(|source| source == ValueSource::CommandLine)
}

impl clap::Args for AmqpArgs {
    fn group_id() -> Option<clap::Id> {
        AmqpFlags::group_id()
    }
    fn augment_args(cmd: clap::Command) -> clap::Command {
        AmqpFlags::augment_args(cmd)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        AmqpFlags::augment_args_for_update(cmd)
    }
}

impl FromArgMatches for AmqpArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        let on_command_line = url_source_is_command_line(matches).unwrap_or(false);
        let flags = AmqpFlags::from_arg_matches_mut(matches)?;
        Ok(AmqpArgs::from_flags(flags, on_command_line))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.update_from_arg_matches_mut(&mut matches.clone())
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        let on_command_line =
            url_source_is_command_line(matches).unwrap_or(self.url_on_command_line);
        let mut flags = self.to_flags();
        flags.update_from_arg_matches_mut(matches)?;
        *self = AmqpArgs::from_flags(flags, on_command_line);
        Ok(())
    }
}

/// Whether a URL carries a password (`scheme://user:password@host`). Errs on the safe side:
/// a `:` anywhere before the last `@` counts, and so does any `@` in a URL without `://`.
fn has_password(url: &str) -> bool {
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.rfind('@').is_some_and(|at| rest[..at].contains(':'))
        }
        None => url.contains('@'),
    }
}

/// Glance's endpoint and credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct GlanceArgs {
    /// Glance API root, e.g. http://glance.internal:9292. With Keystone it may be left out:
    /// Glance is then found in the service catalog.
    #[arg(id = "glance-url", long = "glance-url", env = "SNAPQ_GLANCE_URL")]
    pub url: Option<String>,
    /// File holding the Keystone token sent as X-Auth-Token (surrounding whitespace ignored);
    /// or set SNAPQ_GLANCE_TOKEN. There is no flag for the token itself. Never logged.
    #[arg(
        long = "glance-token-file",
        env = "SNAPQ_GLANCE_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub token_file: Option<PathBuf>,
    /// Which location API to use: auto, new (POST .../locations, API 2.17+) or legacy (PATCH).
    #[arg(long = "glance-location-api", env = "SNAPQ_GLANCE_LOCATION_API", default_value = "auto", value_parser = parse_location_api)]
    pub location_api: LocationApi,
    /// Seconds one Glance request may take.
    #[arg(
        long = "glance-timeout",
        env = "SNAPQ_GLANCE_TIMEOUT",
        default_value_t = 60
    )]
    pub timeout_secs: u64,
    /// PEM file of CA certificates to trust for an https Glance (beside the system's).
    #[arg(
        id = "glance-ca-file",
        long = "glance-ca-file",
        env = "SNAPQ_GLANCE_CA_FILE",
        value_name = "PATH"
    )]
    pub ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub keystone: KeystoneArgs,
}

/// snapq's own service identity in Keystone, as in `clouds.yaml` (password or application
/// credential). With `--keystone-auth-url` set, every Glance request carries a token of that
/// identity, renewed before it expires.
#[derive(Debug, Clone, clap::Args)]
pub struct KeystoneArgs {
    /// Keystone identity endpoint, e.g. http://keystone:5000/v3.
    #[arg(long = "keystone-auth-url", env = "SNAPQ_KEYSTONE_AUTH_URL")]
    pub auth_url: Option<String>,
    /// snapq's Keystone user (password auth, or with an application credential's name).
    #[arg(long = "keystone-username", env = "SNAPQ_KEYSTONE_USERNAME")]
    pub username: Option<String>,
    #[arg(
        long = "keystone-user-domain-name",
        env = "SNAPQ_KEYSTONE_USER_DOMAIN_NAME",
        default_value = "Default"
    )]
    pub user_domain_name: String,
    /// Project the password token is scoped to (snapq's service project).
    #[arg(long = "keystone-project-name", env = "SNAPQ_KEYSTONE_PROJECT_NAME")]
    pub project_name: Option<String>,
    #[arg(
        long = "keystone-project-domain-name",
        env = "SNAPQ_KEYSTONE_PROJECT_DOMAIN_NAME",
        default_value = "Default"
    )]
    pub project_domain_name: String,
    /// File holding the password (surrounding whitespace ignored); or set
    /// SNAPQ_KEYSTONE_PASSWORD. There is no flag for the password itself.
    #[arg(
        long = "keystone-password-file",
        env = "SNAPQ_KEYSTONE_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub password_file: Option<PathBuf>,
    /// Application credential id (instead of a password).
    #[arg(
        long = "keystone-application-credential-id",
        env = "SNAPQ_KEYSTONE_APPLICATION_CREDENTIAL_ID"
    )]
    pub application_credential_id: Option<String>,
    /// Application credential name (with --keystone-username), instead of its id.
    #[arg(
        long = "keystone-application-credential-name",
        env = "SNAPQ_KEYSTONE_APPLICATION_CREDENTIAL_NAME"
    )]
    pub application_credential_name: Option<String>,
    /// File holding the application credential's secret; or set
    /// SNAPQ_KEYSTONE_APPLICATION_CREDENTIAL_SECRET.
    #[arg(
        long = "keystone-application-credential-secret-file",
        env = "SNAPQ_KEYSTONE_APPLICATION_CREDENTIAL_SECRET_FILE",
        value_name = "PATH"
    )]
    pub application_credential_secret_file: Option<PathBuf>,
    /// Which catalog endpoint of Glance to use: public, internal or admin.
    #[arg(
        long = "glance-interface",
        env = "SNAPQ_GLANCE_INTERFACE",
        default_value = "internal"
    )]
    pub interface: String,
    /// Region of the catalog endpoint (any region if unset).
    #[arg(long = "keystone-region-name", env = "SNAPQ_KEYSTONE_REGION_NAME")]
    pub region_name: Option<String>,
    /// PEM file of CA certificates to trust for an https Keystone (beside the system's).
    #[arg(
        id = "keystone-ca-file",
        long = "keystone-ca-file",
        env = "SNAPQ_KEYSTONE_CA_FILE",
        value_name = "PATH"
    )]
    pub ca_file: Option<PathBuf>,
}

/// The variables the Keystone secrets are read from (besides files).
pub const KEYSTONE_PASSWORD_ENV: &str = "SNAPQ_KEYSTONE_PASSWORD";
pub const KEYSTONE_APP_CRED_SECRET_ENV: &str = "SNAPQ_KEYSTONE_APPLICATION_CREDENTIAL_SECRET";

impl KeystoneArgs {
    /// The Keystone configuration, or None when `--keystone-auth-url` is not set.
    pub fn config(&self, request_timeout: Duration) -> Result<Option<KeystoneConfig>, ConfigError> {
        let Some(auth_url) = non_empty(self.auth_url.as_deref()) else {
            return Ok(None);
        };
        let app_cred = non_empty(self.application_credential_id.as_deref()).is_some()
            || non_empty(self.application_credential_name.as_deref()).is_some();
        let credentials = if app_cred {
            let secret = SecretSource {
                what: "the application credential secret",
                env: KEYSTONE_APP_CRED_SECRET_ENV,
                file_flag: "--keystone-application-credential-secret-file",
                file_sources: "--keystone-application-credential-secret-file/SNAPQ_KEYSTONE_APPLICATION_CREDENTIAL_SECRET_FILE",
            }
            .read_env_or(self.application_credential_secret_file.as_deref())?
            .ok_or(ConfigError::Missing {
                what: "the application credential secret",
                hint: "set SNAPQ_KEYSTONE_APPLICATION_CREDENTIAL_SECRET or --keystone-application-credential-secret-file",
            })?;
            Credentials::ApplicationCredential {
                id: self.application_credential_id.clone(),
                name: self.application_credential_name.clone(),
                username: self.username.clone(),
                user_domain_name: self.user_domain_name.clone(),
                secret,
            }
        } else {
            let password = SecretSource {
                what: "the Keystone password",
                env: KEYSTONE_PASSWORD_ENV,
                file_flag: "--keystone-password-file",
                file_sources: "--keystone-password-file/SNAPQ_KEYSTONE_PASSWORD_FILE",
            }
            .read_env_or(self.password_file.as_deref())?
            .ok_or(ConfigError::Missing {
                what: "the Keystone password",
                hint: "set SNAPQ_KEYSTONE_PASSWORD or --keystone-password-file (or use an application credential)",
            })?;
            Credentials::Password {
                username: self.username.clone().unwrap_or_default(),
                user_domain_name: self.user_domain_name.clone(),
                password,
                project_name: self.project_name.clone().unwrap_or_default(),
                project_domain_name: self.project_domain_name.clone(),
            }
        };
        Ok(Some(KeystoneConfig {
            auth_url: auth_url.to_string(),
            credentials,
            request_timeout,
            ca_file: self.ca_file.clone(),
        }))
    }
}

/// Where one secret may come from: a variable or a file named by a flag, at most one.
struct SecretSource {
    what: &'static str,
    env: &'static str,
    file_flag: &'static str,
    /// The flag and its variable, as a conflict names them.
    file_sources: &'static str,
}

impl SecretSource {
    /// The secret from the variable's value `from_env` or the file `path`, or None.
    fn read(
        &self,
        from_env: Option<&str>,
        path: Option<&Path>,
    ) -> Result<Option<String>, ConfigError> {
        match (non_empty(from_env), non_empty_path(path)) {
            (Some(_), Some(_)) => Err(ConfigError::Conflict {
                what: self.what,
                first: self.env,
                second: self.file_sources,
            }),
            (Some(value), None) => Ok(Some(value.to_string())),
            (None, Some(path)) => Ok(Some(read_secret_file(self.file_flag, path)?)),
            (None, None) => Ok(None),
        }
    }

    /// [`SecretSource::read`] with the variable read from the environment.
    fn read_env_or(&self, path: Option<&Path>) -> Result<Option<String>, ConfigError> {
        self.read(env_secret(self.env)?.as_deref(), path)
    }
}

fn parse_location_api(s: &str) -> Result<LocationApi, String> {
    match s {
        "auto" => Ok(LocationApi::Auto),
        "new" => Ok(LocationApi::New),
        "legacy" => Ok(LocationApi::Legacy),
        other => Err(format!("expected auto, new or legacy, got '{other}'")),
    }
}

impl GlanceArgs {
    /// The client configuration, with the token read from `SNAPQ_GLANCE_TOKEN` or from the
    /// file named by `--glance-token-file` (at most one of them; neither: no token).
    pub fn config(&self) -> Result<GlanceConfig, ConfigError> {
        let from_env = env_secret(GLANCE_TOKEN_ENV)?;
        self.config_with(from_env.as_deref())
    }

    /// [`GlanceArgs::config`] with the value of `SNAPQ_GLANCE_TOKEN` given.
    fn config_with(&self, token_from_env: Option<&str>) -> Result<GlanceConfig, ConfigError> {
        let token = SecretSource {
            what: "the Glance token",
            env: GLANCE_TOKEN_ENV,
            file_flag: "--glance-token-file",
            file_sources: "--glance-token-file/SNAPQ_GLANCE_TOKEN_FILE",
        }
        .read(token_from_env, self.token_file.as_deref())?;
        Ok(GlanceConfig {
            url: self.url.clone().unwrap_or_default(),
            ca_file: self.ca_file.clone(),
            token,
            keystone: None,
            request_timeout: Duration::from_secs(self.timeout_secs),
            location_api: self.location_api,
        })
    }
}

/// A secret from the environment; unset or blank is `None`.
fn env_secret(name: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::NotUnicode { name }),
    }
}

/// The value without surrounding whitespace; blank is `None` (as if unset).
fn non_empty(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn non_empty_path(path: Option<&Path>) -> Option<&Path> {
    path.filter(|p| !p.as_os_str().is_empty())
}

/// A secret kept in a file: its text without surrounding whitespace (the trailing newline).
/// Errors name `option` and the path, never the contents.
fn read_secret_file(option: &'static str, path: &Path) -> Result<String, ConfigError> {
    let unreadable = |error| ConfigError::UnreadableFile {
        option,
        path: path.to_path_buf(),
        error,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(SECRET_FILE_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    if text.len() as u64 > SECRET_FILE_LIMIT {
        return Err(ConfigError::FileTooLong {
            option,
            path: path.to_path_buf(),
            limit: SECRET_FILE_LIMIT,
        });
    }
    let secret = text.trim();
    if secret.is_empty() {
        return Err(ConfigError::EmptyFile {
            option,
            path: path.to_path_buf(),
        });
    }
    Ok(secret.to_string())
}

/// How to reach Ceph.
#[derive(Debug, Clone, clap::Args)]
pub struct CephArgs {
    /// ceph.conf naming the monitors and the keyring.
    #[arg(
        long = "ceph-conf",
        env = "SNAPQ_CEPH_CONF",
        default_value = "/etc/ceph/ceph.conf"
    )]
    pub conf: String,
    /// Ceph user id without `client.` (Nova's user: rbd on the disk and image pools).
    #[arg(long = "ceph-user", env = "SNAPQ_CEPH_USER", default_value = "nova")]
    pub user: String,
    /// Pool Glance's rbd store uses.
    #[arg(
        long = "glance-pool",
        env = "SNAPQ_GLANCE_POOL",
        default_value = "images"
    )]
    pub glance_pool: String,
    /// Seconds to wait for the cluster connection.
    #[arg(
        long = "ceph-connect-timeout",
        env = "SNAPQ_CEPH_CONNECT_TIMEOUT",
        default_value_t = 30
    )]
    pub connect_timeout_secs: u64,
    /// Seconds one librados request may wait for a monitor or an OSD (and the connection for
    /// the monitors) before it fails, instead of hanging while the cluster is unreachable.
    #[arg(
        long = "ceph-op-timeout",
        env = "SNAPQ_CEPH_OP_TIMEOUT",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub op_timeout_secs: u64,
}

impl CephArgs {
    pub fn config(&self) -> CephConfig {
        CephConfig {
            conf_path: self.conf.clone(),
            user: self.user.clone(),
            op_timeout: Duration::from_secs(self.op_timeout_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const PASSWORD: &str = "S3cret-pw-9";
    const URL_WITH_PASSWORD: &str = "amqp://snapq:S3cret-pw-9@127.0.0.1:5672/%2f";

    /// A command with the shared flags. Values "from the environment" are given by building
    /// the structs directly: the tests never set process variables.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        amqp: AmqpArgs,
        #[command(flatten)]
        glance: GlanceArgs,
    }

    fn amqp(url: Option<&str>, url_file: Option<&Path>, on_command_line: bool) -> AmqpArgs {
        AmqpArgs {
            url: url.map(str::to_string),
            url_file: url_file.map(Path::to_path_buf),
            url_on_command_line: on_command_line,
            exchange: "openstack".into(),
            exchange_durable: false,
            topic: "snapq".into(),
            delivery_limit: 5,
            ca_file: None,
        }
    }

    fn glance(token_file: Option<&Path>) -> GlanceArgs {
        GlanceArgs {
            url: Some("http://glance:9292".into()),
            token_file: token_file.map(Path::to_path_buf),
            location_api: LocationApi::Auto,
            timeout_secs: 60,
            keystone: KeystoneArgs {
                auth_url: None,
                username: None,
                user_domain_name: "Default".into(),
                project_name: None,
                project_domain_name: "Default".into(),
                password_file: None,
                application_credential_id: None,
                application_credential_name: None,
                application_credential_secret_file: None,
                interface: "internal".into(),
                region_name: None,
                ca_file: None,
            },
            ca_file: None,
        }
    }

    /// A file in a fresh temporary directory holding `contents`.
    struct TempFile {
        dir: PathBuf,
        path: PathBuf,
    }

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> TempFile {
            let dir = std::env::temp_dir().join(format!(
                "snapq-config-test-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            TempFile { dir, path }
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Parses `args` alone: the `SNAPQ_*` variables of the test process are ignored.
    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let ids: Vec<clap::Id> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
        for id in ids {
            cmd = cmd.mut_arg(id, |a| a.env(None));
        }
        let matches =
            cmd.try_get_matches_from(std::iter::once("snapq-test").chain(args.iter().copied()))?;
        Cli::from_arg_matches(&matches)
    }

    fn parse(args: &[&str]) -> Cli {
        try_parse(args).unwrap()
    }

    #[test]
    fn broker_url_from_the_environment_may_hold_a_password() {
        let url = amqp(Some(URL_WITH_PASSWORD), None, false)
            .resolve()
            .unwrap();
        assert_eq!(url, URL_WITH_PASSWORD);
    }

    #[test]
    fn broker_url_from_a_file_loses_its_trailing_newline() {
        let file = TempFile::new("amqp-url", format!("{URL_WITH_PASSWORD}\n").as_bytes());
        let url = amqp(None, Some(&file.path), false).resolve().unwrap();
        assert_eq!(url, URL_WITH_PASSWORD);
    }

    #[test]
    fn broker_url_with_a_password_on_the_command_line_is_refused_without_echoing_it() {
        let cli = parse(&["--amqp-url", URL_WITH_PASSWORD, "--glance-url", "http://g"]);
        let err = cli.amqp.resolve().unwrap_err();
        assert!(
            matches!(err, ConfigError::PasswordOnCommandLine { .. }),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(shown.contains("--amqp-url"), "{shown}");
        assert!(shown.contains("SNAPQ_AMQP_URL"), "{shown}");
        assert!(shown.contains("--amqp-url-file"), "{shown}");
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(!format!("{err:?}").contains(PASSWORD));

        let joined = format!("--amqp-url={URL_WITH_PASSWORD}");
        let cli = parse(&[&joined, "--glance-url", "http://g"]);
        assert!(matches!(
            cli.amqp.resolve(),
            Err(ConfigError::PasswordOnCommandLine { .. })
        ));
    }

    #[test]
    fn broker_url_without_a_password_is_accepted_on_the_command_line() {
        let cli = parse(&[
            "--amqp-url",
            "amqp://127.0.0.1:5672/%2f",
            "--glance-url",
            "http://g",
        ]);
        assert_eq!(cli.amqp.resolve().unwrap(), "amqp://127.0.0.1:5672/%2f");
        let cli = parse(&[
            "--amqp-url",
            "amqp://snapq@h/%2f",
            "--glance-url",
            "http://g",
        ]);
        assert_eq!(cli.amqp.resolve().unwrap(), "amqp://snapq@h/%2f");
    }

    #[test]
    fn broker_url_file_flag_is_parsed_from_the_command_line() {
        let file = TempFile::new("amqp-url", URL_WITH_PASSWORD.as_bytes());
        let path = file.path.to_str().unwrap();
        let cli = parse(&["--amqp-url-file", path, "--glance-url", "http://g"]);
        assert_eq!(cli.amqp.resolve().unwrap(), URL_WITH_PASSWORD);
    }

    #[test]
    fn broker_url_given_both_ways_is_refused_naming_both_options() {
        let file = TempFile::new("amqp-url", URL_WITH_PASSWORD.as_bytes());
        let err = amqp(Some(URL_WITH_PASSWORD), Some(&file.path), false)
            .resolve()
            .unwrap_err();
        assert!(matches!(err, ConfigError::Conflict { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(shown.contains("SNAPQ_AMQP_URL"), "{shown}");
        assert!(shown.contains("--amqp-url-file"), "{shown}");
        assert!(!shown.contains(PASSWORD), "{shown}");
    }

    #[test]
    fn broker_url_missing_is_refused_naming_where_to_put_it() {
        for (url, file) in [(None, None), (Some("  "), Some(Path::new("")))] {
            let err = amqp(url, file, false).resolve().unwrap_err();
            assert!(matches!(err, ConfigError::Missing { .. }), "{err:?}");
            let shown = err.to_string();
            assert!(shown.contains("SNAPQ_AMQP_URL"), "{shown}");
            assert!(shown.contains("--amqp-url-file"), "{shown}");
        }
    }

    #[test]
    fn unreadable_or_empty_secret_file_is_an_error_naming_the_option_and_path() {
        let missing = std::env::temp_dir().join(format!("snapq-no-such-{}", uuid::Uuid::new_v4()));
        let err = amqp(None, Some(&missing), false).resolve().unwrap_err();
        assert!(matches!(err, ConfigError::UnreadableFile { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(shown.contains("--amqp-url-file"), "{shown}");
        assert!(shown.contains(&missing.display().to_string()), "{shown}");

        let empty = TempFile::new("token", b" \n");
        let err = glance(Some(&empty.path)).config_with(None).unwrap_err();
        assert!(matches!(err, ConfigError::EmptyFile { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(shown.contains("--glance-token-file"), "{shown}");
        assert!(shown.contains(&empty.path.display().to_string()), "{shown}");
    }

    #[test]
    fn secret_file_errors_never_show_its_contents() {
        let binary = TempFile::new("token", b"S3cret-token-\xff\xfe\n");
        let err = glance(Some(&binary.path)).config_with(None).unwrap_err();
        assert!(matches!(err, ConfigError::UnreadableFile { .. }), "{err:?}");
        assert!(!err.to_string().contains("S3cret"), "{err}");
        assert!(!format!("{err:?}").contains("S3cret"), "{err:?}");

        let huge = TempFile::new("token", &vec![b'S'; SECRET_FILE_LIMIT as usize + 10]);
        let err = glance(Some(&huge.path)).config_with(None).unwrap_err();
        assert!(matches!(err, ConfigError::FileTooLong { .. }), "{err:?}");
        assert!(!err.to_string().contains("SSSS"), "{err}");
    }

    #[test]
    fn glance_token_comes_from_the_environment_or_a_file_or_not_at_all() {
        let from_env = glance(None).config_with(Some("tok-env\n")).unwrap();
        assert_eq!(from_env.token.as_deref(), Some("tok-env"));

        let file = TempFile::new("token", b"tok-file\n");
        let from_file = glance(Some(&file.path)).config_with(None).unwrap();
        assert_eq!(from_file.token.as_deref(), Some("tok-file"));

        assert_eq!(glance(None).config_with(None).unwrap().token, None);
        assert_eq!(glance(None).config_with(Some("")).unwrap().token, None);
    }

    #[test]
    fn glance_token_given_both_ways_is_refused_without_showing_it() {
        let file = TempFile::new("token", b"tok-file-S3cret\n");
        let err = glance(Some(&file.path))
            .config_with(Some("tok-env-S3cret"))
            .unwrap_err();
        assert!(matches!(err, ConfigError::Conflict { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(shown.contains("SNAPQ_GLANCE_TOKEN"), "{shown}");
        assert!(shown.contains("--glance-token-file"), "{shown}");
        assert!(!shown.contains("S3cret"), "{shown}");
    }

    #[test]
    fn glance_token_has_no_command_line_flag() {
        let err =
            try_parse(&["--glance-url", "http://g", "--glance-token", "S3cret-tok"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(!err.to_string().contains("S3cret-tok"), "{err}");
    }

    #[test]
    fn help_hides_secret_values_and_names_their_variables() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let url = cmd
            .get_arguments()
            .find(|a| a.get_id() == AMQP_URL_ID)
            .unwrap();
        assert!(url.is_hide_env_values_set());
        let help = cmd.render_long_help().to_string();
        assert!(help.contains("SNAPQ_AMQP_URL"), "{help}");
        assert!(help.contains("--amqp-url-file"), "{help}");
        assert!(help.contains("SNAPQ_GLANCE_TOKEN"), "{help}");
        assert!(help.contains("--glance-token-file"), "{help}");
        assert!(!help.contains("--glance-token "), "{help}");
    }

    #[test]
    fn debug_of_the_amqp_args_hides_the_password() {
        let shown = format!("{:?}", amqp(Some(URL_WITH_PASSWORD), None, false));
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(shown.contains("127.0.0.1:5672"), "{shown}");
    }

    #[test]
    fn ceph_op_timeout_defaults_to_ten_seconds_and_is_bounded() {
        #[derive(Debug, Parser)]
        struct CephCli {
            #[command(flatten)]
            ceph: CephArgs,
        }
        let parse = |args: &[&str]| {
            use clap::CommandFactory;
            let mut cmd = CephCli::command();
            let ids: Vec<clap::Id> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
            for id in ids {
                cmd = cmd.mut_arg(id, |a| a.env(None));
            }
            cmd.try_get_matches_from(std::iter::once("snapq-test").chain(args.iter().copied()))
                .and_then(|matches| CephCli::from_arg_matches(&matches))
        };
        let default = parse(&[]).unwrap().ceph.config();
        assert_eq!(default.op_timeout, Duration::from_secs(10));
        assert_eq!(default.op_timeout, CephConfig::DEFAULT_OP_TIMEOUT);
        let set = parse(&["--ceph-op-timeout", "3600"]).unwrap().ceph.config();
        assert_eq!(set.op_timeout, Duration::from_secs(3600));
        for out_of_range in ["0", "3601", "-1", "1.5"] {
            let arg = format!("--ceph-op-timeout={out_of_range}");
            let err = parse(&[&arg]).unwrap_err();
            assert!(err.to_string().contains("--ceph-op-timeout"), "{err}");
        }
    }

    #[test]
    fn passwords_are_spotted_in_every_url_shape() {
        for url in [
            "amqp://u:pw@h/%2f",
            "amqps://u:p%40w@h:5671/v",
            "amqp://u:p@ss@h",
            "amqp://u:p/ss@h",
            "amqp:u:pw@h",
            "u:pw@h",
        ] {
            assert!(has_password(url), "{url}");
        }
        for url in ["amqp://h:5672/%2f", "amqp://u@h:5672", "amqp://h"] {
            assert!(!has_password(url), "{url}");
        }
    }
}
