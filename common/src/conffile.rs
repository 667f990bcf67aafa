//! The config file `snapq.conf`, in oslo.config's INI dialect, as OpenStack services read
//! theirs with `--config-file PATH`. Its options become the defaults of the matching clap
//! arguments, so the precedence is: command line > `SNAPQ_*` variable > config file > built-in
//! default. Every value read from the file is checked at start, with the argument's own value
//! parser, and an error names the file, line, section and option.
//!
//! Secrets (`[keystone_authtoken] password`, the `[DEFAULT] transport_url` with its password,
//! ...) have no clap argument on purpose: they are collected into [`ConfSecrets`] and never
//! appear in `--help`, `Debug` output, logs or errors.
//!
//! # Why a parser of our own
//! `rust-ini` and `configparser` read other dialects of INI, and neither keeps the line of
//! each value, which errors here must name. `configparser` also keeps one value per key
//! (a MultiStrOpt repeats its key) and lowercases keys unless asked not to; `rust-ini` reads
//! `\` as an escape by default and strips quotes by other rules (`'a' b` is `a b`). oslo's
//! own parser is short (`oslo_config/iniparser.py`, `BaseParser`, with `ConfigParser` in
//! `cfg.py`); this one follows it rule by rule:
//!
//! - every line is stripped on the right first; an empty line ends a multi-line value;
//! - a line starting with a space or a tab continues the value above (stripped on the left,
//!   joined with `\n`); with no value above (at the top, after a header, a comment or an
//!   empty line) it is an error. So comments and `[section]` headers start in the first column:
//!   an indented `# note` under an option is part of its value;
//! - `[name]` starts a section; `#` or `;` in the first column starts a comment; there are no
//!   inline comments (`a = b # c` is the value `b # c`);
//! - otherwise the line is `key = value` or `key: value`, split at whichever of `=` and `:`
//!   comes first; key and value are stripped, the key must not be empty, the value may be;
//! - a value whose first and last characters are the same quote (`"` or `'`) loses them, once;
//! - a key may repeat, also across sections of the same name and across files: a plain option
//!   takes the last value, a multi-valued one (oslo's MultiStrOpt) all of them in order;
//! - keys are case-sensitive and `-` is not read as `_` (oslo looks the file up by the
//!   option's `dest`, its name with `_`); section names are case-insensitive except `DEFAULT`,
//!   which must be written in capitals (`[default]` is another section; oslo's
//!   `_normalize_group_name` in `cfg.py`);
//! - an option before any section header is an error (`ConfigParser.error_no_section`).
//!
//! oslo.config also substitutes `$name` and `${group.name}` in values with other options'
//! values, and reads `$$` and `\$` as a literal `$` (`ConfigOpts._substitute`). snapq reads the
//! escapes the same way and refuses a reference, instead of passing `$name` on as text (which
//! oslo would not do). Differences kept on purpose: a leading UTF-8 byte order mark is
//! skipped; syntax errors name the line but never show it (it may hold a password); the command
//! line always wins over the files, where oslo lets a `--config-file` given after one of its
//! command-line options override it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, Command};

/// The flag naming a config file (`--config-file PATH`, repeatable).
pub const CONFIG_FILE_FLAG: &str = "config-file";
/// The variable naming the config file when no `--config-file` is given.
pub const CONFIG_FILE_ENV: &str = "SNAPQ_CONFIG_FILE";
/// The one section name that is not case-insensitive.
const DEFAULT_SECTION: &str = "DEFAULT";
/// Longest config file read: a mistyped path (`/dev/zero`) must not eat the memory. oslo's
/// longest sample file, nova.conf with every comment, is about 300 KiB.
const FILE_LIMIT: u64 = 4 * 1024 * 1024;

/// One option of the config file bound to a clap argument: `[section] option` becomes the
/// default of the argument whose id is `arg_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptSpec {
    pub section: &'static str,
    pub option: &'static str,
    pub arg_id: &'static str,
}

/// One secret of the config file, collected into [`ConfSecrets`] under `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretSpec {
    pub section: &'static str,
    pub option: &'static str,
    pub name: &'static str,
}

/// A value of the config file and where it was written. `Debug` does not show the value,
/// which may be a secret.
#[derive(Clone)]
pub struct ConfValue {
    value: String,
    path: Arc<Path>,
    line: usize,
}

impl ConfValue {
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The file the value was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line of the option's key (1-based), also for a value continued on later lines.
    pub fn line(&self) -> usize {
        self.line
    }
}

impl fmt::Debug for ConfValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfValue")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// One `key = value` of a file, under its section's normalized name.
#[derive(Clone)]
struct Entry {
    section: String,
    option: String,
    value: ConfValue,
}

/// A file read, with its permission bits (None for text given to [`ConfFile::parse`]).
#[derive(Debug, Clone)]
struct FileInfo {
    path: Arc<Path>,
    mode: Option<u32>,
}

/// One or more config files, parsed; later files override earlier ones. `Debug` lists the
/// options and where they are, not their values.
#[derive(Clone, Default)]
pub struct ConfFile {
    files: Vec<FileInfo>,
    /// Every value, in the order of the files and of their lines.
    entries: Vec<Entry>,
}

impl fmt::Debug for ConfFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                format!(
                    "[{}] {} ({} line {})",
                    e.section,
                    e.option,
                    e.value.path.display(),
                    e.value.line
                )
            })
            .collect();
        f.debug_struct("ConfFile")
            .field("files", &self.files)
            .field("options", &options)
            .finish()
    }
}

impl ConfFile {
    /// Reads and parses `paths` in order (as oslo.config reads its `--config-file`s).
    pub fn read(paths: &[impl AsRef<Path>]) -> Result<ConfFile, ConfFileError> {
        let mut conf = ConfFile::default();
        for path in paths {
            let path = path.as_ref();
            let (text, mode) = read_file(path)?;
            conf.add(Arc::from(path), Some(mode), &text)?;
        }
        Ok(conf)
    }

    /// Parses `text` as the contents of the file `path` (named in errors).
    pub fn parse(path: impl AsRef<Path>, text: &str) -> Result<ConfFile, ConfFileError> {
        let mut conf = ConfFile::default();
        conf.add(Arc::from(path.as_ref()), None, text)?;
        Ok(conf)
    }

    /// The files read, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|f| &*f.path)
    }

    /// The value of `[section] option` that a plain option takes: the last one written.
    /// `section` is compared as oslo.config does (any case, except `DEFAULT`).
    pub fn get(&self, section: &str, option: &str) -> Option<&ConfValue> {
        self.values(section, option).pop()
    }

    /// Every value of `[section] option`, in order.
    fn values(&self, section: &str, option: &str) -> Vec<&ConfValue> {
        let section = normalize_section(section);
        self.entries
            .iter()
            .filter(|e| e.section == section && e.option == option)
            .map(|e| &e.value)
            .collect()
    }

    fn add(&mut self, path: Arc<Path>, mode: Option<u32>, text: &str) -> Result<(), ConfFileError> {
        parse_into(&path, text, &mut self.entries)?;
        self.files.push(FileInfo { path, mode });
        Ok(())
    }
}

/// The text of the file at `path` and its mode.
fn read_file(path: &Path) -> Result<(String, u32), ConfFileError> {
    let unreadable = |error| ConfFileError::Unreadable {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    // The mode of the file opened, not of whatever the path names a moment later.
    let mode = file.metadata().map_err(unreadable)?.permissions().mode();
    let mut bytes = Vec::new();
    (&file)
        .take(FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > FILE_LIMIT {
        return Err(ConfFileError::TooLong {
            path: path.to_path_buf(),
            limit: FILE_LIMIT,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ConfFileError::NotUtf8 {
            path: path.to_path_buf(),
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
        }
    })?;
    Ok((text, mode))
}

/// oslo's group names: `DEFAULT` as is, every other name in lower case.
fn normalize_section(name: &str) -> String {
    if name == DEFAULT_SECTION {
        name.to_string()
    } else {
        name.to_lowercase()
    }
}

/// An option whose value may go on over continuation lines.
struct Pending<'t> {
    key: &'t str,
    line: usize,
    parts: Vec<&'t str>,
}

/// oslo's `BaseParser.parse` and `ConfigParser.assignment`, appending to `entries`.
fn parse_into(path: &Arc<Path>, text: &str, entries: &mut Vec<Entry>) -> Result<(), ConfFileError> {
    let syntax = |line, reason| ConfFileError::Syntax {
        path: path.to_path_buf(),
        line,
        reason,
    };
    // oslo's `_assignment`: an option is stored when the next line shows it is complete.
    let mut finish = |pending: Option<Pending>, section: &Option<String>| {
        let Some(p) = pending else { return Ok(()) };
        let Some(section) = section else {
            return Err(syntax(p.line, SyntaxError::OptionBeforeSection));
        };
        entries.push(Entry {
            section: section.clone(),
            option: p.key.to_string(),
            value: ConfValue {
                value: p.parts.join("\n"),
                path: Arc::clone(path),
                line: p.line,
            },
        });
        Ok(())
    };

    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut section: Option<String> = None;
    let mut pending: Option<Pending> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim_end();
        if line.is_empty() {
            finish(pending.take(), &section)?;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match pending.as_mut() {
                Some(p) => p.parts.push(line.trim_start()),
                None => return Err(syntax(number, SyntaxError::UnexpectedContinuation)),
            }
            continue;
        }
        finish(pending.take(), &section)?;
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| syntax(number, SyntaxError::NoClosingBracket))?;
            if name.is_empty() {
                return Err(syntax(number, SyntaxError::EmptySectionName));
            }
            section = Some(normalize_section(name));
        } else if line.starts_with(['#', ';']) {
            // A comment.
        } else {
            let (key, value) =
                split_key_value(line).ok_or_else(|| syntax(number, SyntaxError::NoSeparator))?;
            if key.is_empty() {
                return Err(syntax(number, SyntaxError::EmptyKey));
            }
            pending = Some(Pending {
                key,
                line: number,
                parts: vec![value],
            });
        }
    }
    finish(pending, &section)
}

/// oslo's `_split_key_value`: split at the first `=` or `:`, strip, drop one pair of quotes.
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let at = line.find(['=', ':'])?;
    let key = line[..at].trim();
    let mut value = line[at + 1..].trim();
    if let Some(quote @ ('"' | '\'')) = value.chars().next() {
        if value.ends_with(quote) {
            value = value.get(1..value.len() - 1).unwrap_or("");
        }
    }
    Some((key, value))
}

/// Why a line of a config file cannot be read. Never shows the line: it may hold a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyntaxError {
    #[error(
        "not a [section] header, an 'option = value' line, a comment (# or ; in the first \
         column) nor an indented continuation line: no '=' or ':' found"
    )]
    NoSeparator,
    #[error("no option name before the '=' or ':'")]
    EmptyKey,
    #[error(
        "an indented line with no value above to continue (comments and [section] headers \
         start in the first column; an empty line ends a value)"
    )]
    UnexpectedContinuation,
    #[error("a section header without its closing ']'")]
    NoClosingBracket,
    #[error("a section header without a name")]
    EmptySectionName,
    #[error("an option before any [section] header (put it under [DEFAULT] or its section)")]
    OptionBeforeSection,
}

/// A config file that cannot be used. Messages name the file, line, section and option, and
/// never a secret's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfFileError {
    #[error("{}: cannot read the config file: {error}", .path.display())]
    Unreadable { path: PathBuf, error: io::Error },
    #[error("{}: the config file is longer than {limit} bytes; is it the right file?", .path.display())]
    TooLong { path: PathBuf, limit: u64 },
    #[error("{} line {line}: not valid UTF-8", .path.display())]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{} line {line}: {reason}", .path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: SyntaxError,
    },
    /// The value is refused by the argument's value parser. `value` is None when the
    /// argument hides its value (it may hold a secret).
    #[error("{at}{}: invalid value: {reason}", ShownValue(.value.as_deref()))]
    InvalidValue {
        at: Box<OptionSite>,
        value: Option<String>,
        reason: String,
    },
    /// An option snapq does not know, in a section it owns.
    #[error("{at}: unknown option{}", Hint(.hint.as_deref()))]
    UnknownOption {
        at: Box<OptionSite>,
        hint: Option<String>,
    },
    /// A `$name` or `${name}` in a value: oslo.config would put another option's value there;
    /// snapq does not. `reference` is None for a secret.
    #[error(
        "{at}: the value refers to another option{} ($name or ${{name}}), which snapq does \
         not substitute; write $$ for a literal $",
        Reference(.reference.as_deref())
    )]
    Substitution {
        at: Box<OptionSite>,
        reference: Option<String>,
    },
    /// An [`OptSpec`] names an argument the command does not have: a mistake in snapq.
    #[error(
        "[{section}] {option} is bound to the argument '{arg_id}', which the command does not have"
    )]
    NoSuchArgument {
        section: &'static str,
        option: &'static str,
        arg_id: &'static str,
    },
}

/// Where an option of a config file is: shown as `snapq.conf line 12: [worker] concurrency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionSite {
    pub path: PathBuf,
    /// The line of the option's key (1-based).
    pub line: usize,
    /// The section's name as oslo.config compares it (lower case, except `DEFAULT`).
    pub section: String,
    pub option: String,
}

impl OptionSite {
    fn new(value: &ConfValue, section: &str, option: &str) -> OptionSite {
        OptionSite {
            path: value.path.to_path_buf(),
            line: value.line,
            section: normalize_section(section),
            option: option.to_string(),
        }
    }
}

impl fmt::Display for OptionSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {}: [{}] {}",
            self.path.display(),
            self.line,
            self.section,
            self.option
        )
    }
}

/// ` = 'value'`, or a note that it is hidden.
struct ShownValue<'a>(Option<&'a str>);

impl fmt::Display for ShownValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, " = '{}'", value.escape_debug()),
            None => f.write_str(" (value not shown)"),
        }
    }
}

struct Hint<'a>(Option<&'a str>);

impl fmt::Display for Hint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(hint) => write!(f, " ({hint})"),
            None => Ok(()),
        }
    }
}

struct Reference<'a>(Option<&'a str>);

impl fmt::Display for Reference<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(reference) => write!(f, " with '{}'", reference.escape_debug()),
            None => Ok(()),
        }
    }
}

/// Something in a config file that snapq reads anyway but the operator should look at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// An option snapq does not know, in a section shared with other services' config.
    UnknownOption {
        at: OptionSite,
        hint: Option<String>,
    },
    /// A file holding secrets that its group or others may access.
    ///
    /// A warning, not an error: OpenStack services run with `0640 root:<service>` config files
    /// (distribution packages, kolla, openstack-ansible), where the group is the service's own
    /// account, and Kubernetes mounts Secrets `0644` by default inside a container with one
    /// user. Refusing those would break the usual deployments; saying so at start lets a
    /// careless `0644` on a shared host be noticed.
    SecretFileMode { path: PathBuf, mode: u32 },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnknownOption { at, hint } => {
                write!(f, "{at}: unknown option, ignored{}", Hint(hint.as_deref()))
            }
            Warning::SecretFileMode { path, mode } => write!(
                f,
                "{} holds secrets and its group or others may access it (mode {:04o}): \
                 make it 0600, or 0640 with a group of snapq's account alone",
                path.display(),
                mode & 0o7777
            ),
        }
    }
}

/// The secrets read from the config files, by [`SecretSpec::name`]. `Debug` shows the names
/// and where each was written, never a value.
#[derive(Clone, Default)]
pub struct ConfSecrets {
    values: BTreeMap<&'static str, ConfValue>,
}

impl ConfSecrets {
    /// The secret collected under `name` (with `$$` read as `$`), if the files set it.
    pub fn get(&self, name: &str) -> Option<&ConfValue> {
        self.values.get(name)
    }
}

impl fmt::Debug for ConfSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(&self.values).finish()
    }
}

/// What [`apply`] made of the config files.
#[derive(Debug)]
pub struct Applied {
    /// The command, with the files' values as the defaults of its arguments.
    pub command: Command,
    /// Things to log at start (they hold no secret).
    pub warnings: Vec<Warning>,
    pub secrets: ConfSecrets,
}

/// Sets each option of `opts` found in `conf` as the default of the clap argument `arg_id`
/// (in `cmd` and in every subcommand that has it), so the environment variable and the
/// command line still override it. Each value is first checked with that argument's own value
/// parser, even when the environment or the command line overrides it: a wrong file is wrong.
///
/// How the argument's action reads the value:
/// - `SetTrue`/`SetFalse` flags, and any argument parsed as `bool`, take oslo's boolean
///   spellings (true/false, yes/no, on/off, 1/0, any case). A flag set to true by the file can
///   only be turned off by its environment variable (`SNAPQ_X=false`): a flag has no `--no-x`;
/// - an argument with `value_delimiter(',')` takes oslo's list form (`a, b,c`; empty is an
///   empty list; one trailing comma is allowed); the last line wins;
/// - `Append` without a delimiter (oslo's MultiStrOpt) takes every value of every file;
/// - any other argument takes the last value.
///
/// A required argument that the file sets is no longer required. An argument with
/// `hide_env_values` keeps its file value out of `--help` and out of errors.
///
/// `secrets` are collected into [`Applied::secrets`] instead (an option listed in both is a
/// secret). Options in `conf` that neither list knows are errors in `strict_sections` (a typo
/// must not be silently ignored) and [`Warning`]s elsewhere (those sections are shared with
/// other services' config, e.g. `[keystone_authtoken] memcached_servers`). A file holding a
/// secret that its group or others may read gives a [`Warning::SecretFileMode`].
pub fn apply(
    cmd: Command,
    conf: &ConfFile,
    opts: &[OptSpec],
    secrets: &[SecretSpec],
    strict_sections: &[&str],
) -> Result<Applied, ConfFileError> {
    // A built copy knows every argument's final action and value parser, and has the global
    // arguments in the subcommands; the defaults go on the unbuilt original.
    let mut probe = cmd.clone();
    probe.build();
    for spec in opts {
        if find_args(&probe, spec.arg_id).is_empty() {
            return Err(ConfFileError::NoSuchArgument {
                section: spec.section,
                option: spec.option,
                arg_id: spec.arg_id,
            });
        }
    }

    let is_secret = |section: &str, option: &str| {
        secrets
            .iter()
            .any(|s| normalize_section(s.section) == section && s.option == option)
    };
    let is_opt = |section: &str, option: &str| {
        opts.iter()
            .any(|s| normalize_section(s.section) == section && s.option == option)
    };
    let strict: Vec<String> = strict_sections
        .iter()
        .map(|s| normalize_section(s))
        .collect();

    let mut warnings = Vec::new();
    for entry in &conf.entries {
        if is_secret(&entry.section, &entry.option) || is_opt(&entry.section, &entry.option) {
            continue;
        }
        let hint = unknown_option_hint(&entry.section, &entry.option, opts, secrets);
        let at = OptionSite::new(&entry.value, &entry.section, &entry.option);
        if strict.contains(&entry.section) {
            return Err(ConfFileError::UnknownOption {
                at: Box::new(at),
                hint,
            });
        }
        warnings.push(Warning::UnknownOption { at, hint });
    }

    let mut cmd = cmd;
    for spec in opts {
        if is_secret(&normalize_section(spec.section), spec.option) {
            continue;
        }
        let values = conf.values(spec.section, spec.option);
        if values.is_empty() {
            continue;
        }
        let defaults = file_defaults(spec, &values, &find_args(&probe, spec.arg_id))?;
        cmd = set_defaults(cmd, spec.arg_id, &defaults);
    }

    let mut collected = BTreeMap::new();
    for spec in secrets {
        if let Some(found) = conf.get(spec.section, spec.option) {
            let value = unescape_dollars(found.as_str()).map_err(|_reference| {
                ConfFileError::Substitution {
                    at: Box::new(OptionSite::new(found, spec.section, spec.option)),
                    reference: None,
                }
            })?;
            collected.insert(
                spec.name,
                ConfValue {
                    value,
                    ..found.clone()
                },
            );
        }
    }

    for file in &conf.files {
        let Some(mode) = file.mode else { continue };
        let holds_secret = conf
            .entries
            .iter()
            .any(|e| Arc::ptr_eq(&e.value.path, &file.path) && is_secret(&e.section, &e.option));
        if holds_secret && mode & 0o077 != 0 {
            warnings.push(Warning::SecretFileMode {
                path: file.path.to_path_buf(),
                mode,
            });
        }
    }

    Ok(Applied {
        command: cmd,
        warnings,
        secrets: ConfSecrets { values: collected },
    })
}

/// A likely meaning of an unknown option, if one is near.
fn unknown_option_hint(
    section: &str,
    option: &str,
    opts: &[OptSpec],
    secrets: &[SecretSpec],
) -> Option<String> {
    if section != DEFAULT_SECTION && section.eq_ignore_ascii_case(DEFAULT_SECTION) {
        return Some("oslo.config reads [DEFAULT] only in capitals".to_string());
    }
    let underscored = option.replace('-', "_");
    opts.iter()
        .map(|s| (s.section, s.option))
        .chain(secrets.iter().map(|s| (s.section, s.option)))
        .filter(|(s, _)| normalize_section(s) == section)
        .map(|(_, known)| known)
        .find(|known| *known == underscored || known.eq_ignore_ascii_case(option))
        .map(|known| format!("did you mean {known}?"))
}

/// Every argument `id` in `cmd` and its subcommands, with the command it belongs to.
fn find_args<'c>(cmd: &'c Command, id: &str) -> Vec<(&'c Command, &'c Arg)> {
    let mut found: Vec<(&Command, &Arg)> = cmd
        .get_arguments()
        .filter(|a| a.get_id() == id)
        .map(|a| (cmd, a))
        .collect();
    for sub in cmd.get_subcommands() {
        found.extend(find_args(sub, id));
    }
    found
}

/// `cmd` with `defaults` as the default values of every argument `id` in it and in its
/// subcommands.
fn set_defaults(cmd: Command, id: &str, defaults: &[String]) -> Command {
    let mut cmd = if cmd.get_arguments().any(|a| a.get_id() == id) {
        cmd.mut_arg(id, |arg| {
            let mut arg = arg.default_values(defaults.iter().cloned());
            if arg.is_required_set() {
                arg = arg.required(false);
            }
            if arg.is_hide_env_values_set() {
                arg = arg.hide_default_value(true);
            }
            arg
        })
    } else {
        cmd
    };
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |sub| set_defaults(sub, id, defaults));
    }
    cmd
}

/// How an argument reads a value of the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// The last value, one clap value.
    Single,
    /// The last value, split as oslo's ListOpt.
    List,
    /// Every value (oslo's MultiStrOpt).
    Multi,
}

impl Shape {
    fn of(arg: &Arg) -> Shape {
        if arg.get_value_delimiter() == Some(',') {
            Shape::List
        } else if matches!(arg.get_action(), ArgAction::Append) {
            Shape::Multi
        } else {
            Shape::Single
        }
    }
}

/// Whether the argument's value is a boolean (a flag, or a value parsed as `bool`).
fn takes_bool(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
        || arg.get_value_parser().type_id() == clap::builder::ValueParser::bool().type_id()
}

/// The clap default values of the file's `values` for `spec`, each checked by every
/// occurrence of the argument.
fn file_defaults(
    spec: &OptSpec,
    values: &[&ConfValue],
    occurrences: &[(&Command, &Arg)],
) -> Result<Vec<String>, ConfFileError> {
    let (_, first) = occurrences[0];
    let shape = Shape::of(first);
    let hidden = occurrences.iter().any(|(_, a)| a.is_hide_env_values_set());
    let boolean = takes_bool(first);
    let chosen: &[&ConfValue] = match shape {
        Shape::Multi => values,
        Shape::Single | Shape::List => &values[values.len() - 1..],
    };

    let mut defaults = Vec::new();
    for found in chosen {
        let at = || Box::new(OptionSite::new(found, spec.section, spec.option));
        let invalid = |reason: String| ConfFileError::InvalidValue {
            at: at(),
            value: (!hidden).then(|| found.value.clone()),
            reason,
        };
        let text =
            unescape_dollars(found.as_str()).map_err(|reference| ConfFileError::Substitution {
                at: at(),
                reference: (!hidden).then_some(reference),
            })?;
        let items = match shape {
            Shape::List => oslo_list(&text),
            Shape::Single | Shape::Multi => vec![text.as_str()],
        };
        for item in items {
            let item = if boolean {
                match oslo_bool(item) {
                    Some(b) => b.to_string(),
                    None => {
                        return Err(invalid(
                            "expected a boolean: true/false, yes/no, on/off or 1/0".to_string(),
                        ))
                    }
                }
            } else {
                item.to_string()
            };
            for (_, arg) in occurrences {
                check_value(arg, &item).map_err(|e| invalid(clap_reason(&e, !hidden)))?;
            }
            defaults.push(item);
        }
    }
    Ok(defaults)
}

/// Checks `value` with `arg`'s value parser, as clap checks a value on the command line.
/// (clap keeps `ValueParser::parse_ref` to itself: a one-argument command does it instead,
/// without the argument's `requires`, `conflicts_with` and such, which concern other
/// arguments.)
fn check_value(arg: &Arg, value: &str) -> Result<(), clap::Error> {
    const ID: &str = "value";
    Command::new("snapq-conffile")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new(ID)
                .long(ID)
                .value_parser(arg.get_value_parser().clone())
                .ignore_case(arg.is_ignore_case_set())
                .action(ArgAction::Set)
                .num_args(1)
                .allow_hyphen_values(true),
        )
        .try_get_matches_from([format!("--{ID}={value}")])
        .map(drop)
}

/// What a value parser said, without clap's framing (which quotes the value). With
/// `may_show_value` false, only what cannot hold the value.
fn clap_reason(err: &clap::Error, may_show_value: bool) -> String {
    match err.kind() {
        ErrorKind::InvalidValue => match err.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) if !valid.is_empty() => {
                format!("expected one of: {}", valid.join(", "))
            }
            _ => "not an accepted value".to_string(),
        },
        ErrorKind::ValueValidation if may_show_value => std::error::Error::source(err)
            .map(|source| source.to_string())
            .unwrap_or_else(|| "not an accepted value".to_string()),
        kind => kind.as_str().unwrap_or("not an accepted value").to_string(),
    }
}

/// oslo's `types.Boolean`.
fn oslo_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" => Some(true),
        "false" | "0" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// oslo's `types.List` of strings: strip, drop trailing commas, split at commas, strip each.
fn oslo_list(value: &str) -> Vec<&str> {
    let value = value.trim().trim_end_matches(',');
    if value.is_empty() {
        return Vec::new();
    }
    value.split(',').map(str::trim).collect()
}

/// oslo's template escapes (`ConfigOpts._substitute`): `$$` and `\$` are a literal `$`, and
/// `$` before anything but a name is kept. A `$name` or `${name}` is Err with the reference as
/// written: oslo would put the option `name`'s value there.
fn unescape_dollars(value: &str) -> Result<String, String> {
    let value = value.replace("\\$", "$$");
    let mut out = String::with_capacity(value.len());
    let mut rest = value.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        if let Some(name) = template_name(after) {
            return Err(format!("${name}"));
        }
        if let Some(inner) = after.strip_prefix('{') {
            if let Some(name) = template_name(inner) {
                if inner[name.len()..].starts_with('}') {
                    return Err(format!("${{{name}}}"));
                }
            }
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// The name at the start of `s` by oslo's `Template.idpattern` (`[_a-z][._a-z0-9]*`, any case).
fn template_name(s: &str) -> Option<&str> {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return None,
    }
    let end = chars
        .find(|(_, c)| !(*c == '_' || *c == '.' || c.is_ascii_alphanumeric()))
        .map_or(s.len(), |(i, _)| i);
    Some(&s[..end])
}

/// The `--config-file PATH` argument, for a command that reads config files: repeatable
/// (later files override earlier ones), accepted after a subcommand too, and read from
/// `SNAPQ_CONFIG_FILE` when not given. [`config_files_from_args`] finds the same paths before
/// clap parses.
pub fn config_file_arg() -> Arg {
    Arg::new(CONFIG_FILE_FLAG)
        .long(CONFIG_FILE_FLAG)
        .env(CONFIG_FILE_ENV)
        .value_name("PATH")
        .value_parser(clap::value_parser!(PathBuf))
        .action(ArgAction::Append)
        .global(true)
        .help(
            "oslo.config-style config file (snapq.conf); repeat for several, later ones \
             override earlier ones. The command line and SNAPQ_* variables override it",
        )
}

/// The config files named by `args` (the whole argv, program name first):
/// every `--config-file PATH` and `--config-file=PATH` before a `--`, in order; without any,
/// the file named by `SNAPQ_CONFIG_FILE`. Empty paths are skipped. Found before clap parses
/// `args`, so that the files' values can become clap's defaults.
pub fn config_files_from_args(args: &[OsString]) -> Vec<PathBuf> {
    config_files_from(args, std::env::var_os(CONFIG_FILE_ENV))
}

/// [`config_files_from_args`] with the value of `SNAPQ_CONFIG_FILE` given.
fn config_files_from(args: &[OsString], from_env: Option<OsString>) -> Vec<PathBuf> {
    let flag = format!("--{CONFIG_FILE_FLAG}");
    let with_equals = format!("{flag}=");
    let mut files = Vec::new();
    let mut args = args.iter().skip(1);
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" {
            break;
        }
        let path = if bytes == flag.as_bytes() {
            args.next().map(OsString::as_os_str)
        } else {
            bytes
                .strip_prefix(with_equals.as_bytes())
                .map(OsStr::from_bytes)
        };
        if let Some(path) = path.filter(|p| !p.is_empty()) {
            files.push(PathBuf::from(path));
        }
    }
    if files.is_empty() {
        files.extend(from_env.filter(|p| !p.is_empty()).map(PathBuf::from));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "S3cret-pw-9";

    fn parse(text: &str) -> ConfFile {
        ConfFile::parse("snapq.conf", text).unwrap()
    }

    fn value(conf: &ConfFile, section: &str, option: &str) -> Option<String> {
        conf.get(section, option).map(|v| v.as_str().to_string())
    }

    fn syntax_error(text: &str) -> (usize, SyntaxError, String) {
        match ConfFile::parse("snapq.conf", text).unwrap_err() {
            err @ ConfFileError::Syntax { line, reason, .. } => (line, reason, err.to_string()),
            other => panic!("not a syntax error: {other:?}"),
        }
    }

    /// A file in a fresh temporary directory holding `contents`, with mode `mode`.
    struct TempFile {
        dir: PathBuf,
        path: PathBuf,
    }

    impl TempFile {
        fn new(name: &str, contents: &[u8], mode: u32) -> TempFile {
            let dir = std::env::temp_dir().join(format!(
                "snapq-conffile-test-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            TempFile { dir, path }
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A worker-like command: every argument of it has its `env` removed, so the test
    /// process's variables play no part (as in config.rs's tests).
    fn worker_command() -> Command {
        let cmd = Command::new("snapq-test")
            .arg(
                Arg::new("concurrency")
                    .long("concurrency")
                    .env("SNAPQ_CONCURRENCY")
                    .value_parser(clap::value_parser!(u32).range(1..=64))
                    .default_value("4"),
            )
            .arg(
                Arg::new("topic")
                    .long("topic")
                    .env("SNAPQ_TOPIC")
                    .default_value("snapq"),
            )
            .arg(
                Arg::new("exchange-durable")
                    .long("exchange-durable")
                    .env("SNAPQ_EXCHANGE_DURABLE")
                    .action(ArgAction::SetTrue),
            )
            .arg(
                Arg::new("no-flatten")
                    .long("no-flatten")
                    .action(ArgAction::SetFalse),
            )
            .arg(
                Arg::new("stores")
                    .long("stores")
                    .value_delimiter(',')
                    .action(ArgAction::Append)
                    .default_value("rbd"),
            )
            .arg(
                Arg::new("extra-header")
                    .long("extra-header")
                    .action(ArgAction::Append),
            )
            .arg(
                Arg::new("location-api")
                    .long("location-api")
                    .value_parser(["auto", "new", "legacy"])
                    .default_value("auto"),
            )
            .arg(
                Arg::new("amqp-url")
                    .long("amqp-url")
                    .env("SNAPQ_AMQP_URL")
                    .hide_env_values(true),
            );
        without_env(cmd)
    }

    fn without_env(cmd: Command) -> Command {
        let ids: Vec<clap::Id> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
        ids.into_iter()
            .fold(cmd, |cmd, id| cmd.mut_arg(id, |a| a.env(None)))
    }

    const OPTS: &[OptSpec] = &[
        OptSpec {
            section: "worker",
            option: "concurrency",
            arg_id: "concurrency",
        },
        OptSpec {
            section: "DEFAULT",
            option: "control_exchange_topic",
            arg_id: "topic",
        },
        OptSpec {
            section: "oslo_messaging_rabbit",
            option: "amqp_durable_queues",
            arg_id: "exchange-durable",
        },
        OptSpec {
            section: "worker",
            option: "flatten",
            arg_id: "no-flatten",
        },
        OptSpec {
            section: "glance",
            option: "stores",
            arg_id: "stores",
        },
        OptSpec {
            section: "glance",
            option: "extra_header",
            arg_id: "extra-header",
        },
        OptSpec {
            section: "glance",
            option: "location_api",
            arg_id: "location-api",
        },
        OptSpec {
            section: "DEFAULT",
            option: "hidden_url",
            arg_id: "amqp-url",
        },
    ];

    const SECRETS: &[SecretSpec] = &[
        SecretSpec {
            section: "DEFAULT",
            option: "transport_url",
            name: "transport_url",
        },
        SecretSpec {
            section: "keystone_authtoken",
            option: "password",
            name: "keystone_password",
        },
    ];

    const STRICT: &[&str] = &["worker", "glance"];

    /// The entry of [`OPTS`] for `arg_id`, for a command with that one argument.
    fn only(arg_id: &str) -> Vec<OptSpec> {
        OPTS.iter()
            .filter(|s| s.arg_id == arg_id)
            .copied()
            .collect()
    }

    fn apply_text(text: &str) -> Result<Applied, ConfFileError> {
        apply(worker_command(), &parse(text), OPTS, SECRETS, STRICT)
    }

    fn matches(applied: Applied, args: &[&str]) -> clap::ArgMatches {
        applied
            .command
            .try_get_matches_from(std::iter::once("snapq-test").chain(args.iter().copied()))
            .unwrap()
    }

    fn one(m: &clap::ArgMatches, id: &str) -> String {
        m.get_one::<String>(id).unwrap().clone()
    }

    fn many(m: &clap::ArgMatches, id: &str) -> Vec<String> {
        m.get_many::<String>(id)
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn sections_options_and_both_separators_are_read() {
        let conf = parse(
            "[DEFAULT]\n\
             transport_url = rabbit://h\n\
             debug: true\n\
             \n\
             [glance]\n\
             url=http://glance:9292\n\
             timeout :  30  \n",
        );
        assert_eq!(
            value(&conf, "DEFAULT", "transport_url").unwrap(),
            "rabbit://h"
        );
        assert_eq!(value(&conf, "DEFAULT", "debug").unwrap(), "true");
        assert_eq!(value(&conf, "glance", "url").unwrap(), "http://glance:9292");
        assert_eq!(value(&conf, "glance", "timeout").unwrap(), "30");
        assert_eq!(conf.get("glance", "timeout").unwrap().line(), 7);
        assert!(conf.get("glance", "debug").is_none());
    }

    #[test]
    fn the_first_of_equals_and_colon_splits_key_from_value() {
        let conf = parse("[DEFAULT]\nurl = rabbit://u:p@h\nkey: a = b\n");
        assert_eq!(value(&conf, "DEFAULT", "url").unwrap(), "rabbit://u:p@h");
        assert_eq!(value(&conf, "DEFAULT", "key").unwrap(), "a = b");
    }

    #[test]
    fn continuation_lines_are_joined_with_newlines_until_an_empty_line() {
        let conf = parse(
            "[DEFAULT]\n\
             servers = a,\n   \
             b,\n\
             \tc\n\
             other = x\n",
        );
        assert_eq!(value(&conf, "DEFAULT", "servers").unwrap(), "a,\nb,\nc");
        assert_eq!(conf.get("DEFAULT", "servers").unwrap().line(), 2);
        assert_eq!(value(&conf, "DEFAULT", "other").unwrap(), "x");

        let (line, reason, _) = syntax_error("[DEFAULT]\nservers = a\n\n  b\n");
        assert_eq!((line, reason), (4, SyntaxError::UnexpectedContinuation));
    }

    #[test]
    fn comments_start_in_the_first_column_and_are_never_inline() {
        let conf = parse(
            "# top comment\n\
             ; another\n\
             [DEFAULT]\n\
             # a = 1\n\
             b = 2 # not a comment\n\
             c = 3 ; nor this\n\
             d = 4\n  \
             # part of d\n",
        );
        assert_eq!(value(&conf, "DEFAULT", "a"), None);
        assert_eq!(value(&conf, "DEFAULT", "b").unwrap(), "2 # not a comment");
        assert_eq!(value(&conf, "DEFAULT", "c").unwrap(), "3 ; nor this");
        assert_eq!(value(&conf, "DEFAULT", "d").unwrap(), "4\n# part of d");

        // An indented comment with no value above is an error, as in oslo.
        let (line, reason, _) = syntax_error("[DEFAULT]\n  # indented\n");
        assert_eq!((line, reason), (2, SyntaxError::UnexpectedContinuation));
    }

    #[test]
    fn repeated_options_keep_every_value_and_the_last_one_wins() {
        let conf =
            parse("[glance]\nheader = a\nheader = b\n[worker]\nx = 1\n[glance]\nheader = c\n");
        let all: Vec<&str> = conf
            .values("glance", "header")
            .into_iter()
            .map(ConfValue::as_str)
            .collect();
        assert_eq!(all, ["a", "b", "c"]);
        let last = conf.get("glance", "header").unwrap();
        assert_eq!((last.as_str(), last.line()), ("c", 7));
    }

    #[test]
    fn section_names_ignore_case_except_default() {
        let conf = parse("[Glance]\nurl = g\n[default]\nx = lower\n[DEFAULT]\nx = upper\n");
        assert_eq!(value(&conf, "glance", "url").unwrap(), "g");
        assert_eq!(value(&conf, "GLANCE", "url").unwrap(), "g");
        assert_eq!(value(&conf, "DEFAULT", "x").unwrap(), "upper");
        assert_eq!(value(&conf, "default", "x").unwrap(), "lower");
    }

    #[test]
    fn option_names_are_case_sensitive_and_dashes_stay_dashes() {
        let conf = parse("[worker]\nConcurrency = 1\nlease-pool = vms\n");
        assert_eq!(value(&conf, "worker", "concurrency"), None);
        assert_eq!(value(&conf, "worker", "Concurrency").unwrap(), "1");
        assert_eq!(value(&conf, "worker", "lease_pool"), None);
        assert_eq!(value(&conf, "worker", "lease-pool").unwrap(), "vms");
    }

    #[test]
    fn one_pair_of_matching_quotes_around_the_value_is_removed() {
        let conf = parse(
            "[DEFAULT]\n\
             a = \"quoted\"\n\
             b = 'single'\n\
             c = \"mixed'\n\
             d = \"\"inner\"\"\n\
             e = \"\n\
             f = say \"hi\"\n",
        );
        assert_eq!(value(&conf, "DEFAULT", "a").unwrap(), "quoted");
        assert_eq!(value(&conf, "DEFAULT", "b").unwrap(), "single");
        assert_eq!(value(&conf, "DEFAULT", "c").unwrap(), "\"mixed'");
        assert_eq!(value(&conf, "DEFAULT", "d").unwrap(), "\"inner\"");
        assert_eq!(value(&conf, "DEFAULT", "e").unwrap(), "");
        assert_eq!(value(&conf, "DEFAULT", "f").unwrap(), "say \"hi\"");
    }

    #[test]
    fn empty_values_are_values() {
        let conf = parse("[DEFAULT]\nempty =\nalso_empty:\n");
        assert_eq!(value(&conf, "DEFAULT", "empty").unwrap(), "");
        assert_eq!(value(&conf, "DEFAULT", "also_empty").unwrap(), "");
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_accepted() {
        let conf = parse("\u{feff}[DEFAULT]\r\nx = 1\r\n");
        assert_eq!(value(&conf, "DEFAULT", "x").unwrap(), "1");
    }

    #[test]
    fn syntax_errors_name_the_file_and_line_but_not_the_line_itself() {
        let cases = [
            (
                "[DEFAULT]\npassword S3cret-pw-9\n",
                2,
                SyntaxError::NoSeparator,
            ),
            ("[DEFAULT]\n= S3cret-pw-9\n", 2, SyntaxError::EmptyKey),
            ("  S3cret-pw-9\n", 1, SyntaxError::UnexpectedContinuation),
            ("[S3cret-pw-9\n", 1, SyntaxError::NoClosingBracket),
            ("[DEFAULT]\n\n[]\n", 3, SyntaxError::EmptySectionName),
            (
                "# comment\npassword = S3cret-pw-9\n",
                2,
                SyntaxError::OptionBeforeSection,
            ),
        ];
        for (text, line, reason) in cases {
            let (got_line, got_reason, shown) = syntax_error(text);
            assert_eq!((got_line, got_reason), (line, reason), "{text:?}");
            assert!(
                shown.starts_with(&format!("snapq.conf line {line}: ")),
                "{shown}"
            );
            assert!(!shown.contains(SECRET), "{shown}");
        }
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_it() {
        let missing = std::env::temp_dir().join(format!("snapq-no-such-{}", uuid::Uuid::new_v4()));
        let err = ConfFile::read(&[&missing]).unwrap_err();
        assert!(matches!(err, ConfFileError::Unreadable { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );

        let dir = TempFile::new("snapq.conf", b"", 0o600);
        let err = ConfFile::read(&[&dir.dir]).unwrap_err();
        assert!(matches!(err, ConfFileError::Unreadable { .. }), "{err:?}");
    }

    #[test]
    fn a_file_that_is_not_utf8_names_the_line_without_its_contents() {
        let file = TempFile::new(
            "snapq.conf",
            b"[DEFAULT]\nx = 1\npassword = S3cret-\xff\n",
            0o600,
        );
        let err = ConfFile::read(&[&file.path]).unwrap_err();
        assert!(
            matches!(err, ConfFileError::NotUtf8 { line: 3, .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains("S3cret"), "{err}");
    }

    #[test]
    fn later_config_files_override_earlier_ones() {
        let first = TempFile::new("a.conf", b"[worker]\nconcurrency = 2\nx = a\n", 0o600);
        let second = TempFile::new("b.conf", b"[worker]\nconcurrency = 3\n", 0o600);
        let conf = ConfFile::read(&[&first.path, &second.path]).unwrap();
        let got = conf.get("worker", "concurrency").unwrap();
        assert_eq!((got.as_str(), got.path()), ("3", second.path.as_path()));
        assert_eq!(value(&conf, "worker", "x").unwrap(), "a");
        assert_eq!(
            conf.paths().collect::<Vec<_>>(),
            [first.path.as_path(), second.path.as_path()]
        );

        let applied = apply(worker_command(), &conf, OPTS, SECRETS, &[]).unwrap();
        assert_eq!(
            *matches(applied, &[]).get_one::<u32>("concurrency").unwrap(),
            3
        );
    }

    #[test]
    fn config_files_are_found_on_the_command_line_or_else_in_the_environment() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        let found = config_files_from(
            &args(&[
                "snapq-worker",
                "--config-file",
                "/etc/snapq/snapq.conf",
                "--topic",
                "t",
                "--config-file=/etc/snapq/local.conf",
                "--config-file=",
                "--",
                "--config-file=/after/dashes",
            ]),
            Some("/from/env".into()),
        );
        assert_eq!(
            found,
            [
                PathBuf::from("/etc/snapq/snapq.conf"),
                PathBuf::from("/etc/snapq/local.conf")
            ]
        );
        let from_env = config_files_from(&args(&["snapq-worker"]), Some("/from/env".into()));
        assert_eq!(from_env, [PathBuf::from("/from/env")]);
        assert!(config_files_from(&args(&["snapq-worker"]), Some("".into())).is_empty());
        assert!(config_files_from(&args(&["snapq-worker", "--config-file"]), None).is_empty());
        // The program name is not an argument.
        assert!(config_files_from(&args(&["--config-file=/x"]), None).is_empty());
    }

    #[test]
    fn the_config_file_flag_is_accepted_by_clap_after_a_subcommand_too() {
        let cmd = Command::new("snapq")
            .arg(config_file_arg().env(None))
            .subcommand(Command::new("jobs"));
        let m = cmd
            .try_get_matches_from(["snapq", "--config-file", "/a", "jobs", "--config-file=/b"])
            .unwrap();
        let (_, sub) = m.subcommand().unwrap();
        assert!(sub.get_many::<PathBuf>(CONFIG_FILE_FLAG).is_some());
    }

    #[test]
    fn file_values_are_defaults_that_the_environment_and_command_line_override() {
        // A variable name no other test or process uses; removed at the end.
        const VAR: &str = "SNAPQ_CONFFILE_TEST_PRECEDENCE_CONCURRENCY";
        let command = || {
            Command::new("snapq-test").arg(
                Arg::new("concurrency")
                    .long("concurrency")
                    .env(VAR)
                    .value_parser(clap::value_parser!(u32))
                    .default_value("4"),
            )
        };
        let conf = parse("[worker]\nconcurrency = 8\n");
        let get = |args: &[&str]| {
            let applied = apply(command(), &conf, &only("concurrency"), &[], &[]).unwrap();
            *matches(applied, args)
                .get_one::<u32>("concurrency")
                .unwrap()
        };
        let built_in = *command()
            .try_get_matches_from(["snapq-test"])
            .unwrap()
            .get_one::<u32>("concurrency")
            .unwrap();
        assert_eq!(built_in, 4);

        std::env::remove_var(VAR);
        assert_eq!(get(&[]), 8, "file over built-in default");
        assert_eq!(get(&["--concurrency", "16"]), 16, "command line over file");
        std::env::set_var(VAR, "12");
        assert_eq!(get(&[]), 12, "environment over file");
        assert_eq!(
            get(&["--concurrency=16"]),
            16,
            "command line over environment"
        );
        std::env::remove_var(VAR);
    }

    #[test]
    fn an_invalid_value_names_file_line_section_option_and_the_parsers_reason() {
        let err = apply_text("[DEFAULT]\n\n[worker]\nconcurrency = x\n").unwrap_err();
        assert!(
            matches!(&err, ConfFileError::InvalidValue { at, .. } if at.line == 4),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(
            shown.starts_with("snapq.conf line 4: [worker] concurrency = 'x': invalid value: "),
            "{shown}"
        );
        assert!(shown.contains("invalid digit"), "{shown}");

        let err = apply_text("[worker]\nconcurrency = 65\n").unwrap_err();
        assert!(err.to_string().contains("65 is not in 1..=64"), "{err}");

        let err = apply_text("[glance]\nlocation_api = newest\n").unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("[glance] location_api = 'newest': invalid value: expected one of: auto, new, legacy"),
            "{shown}"
        );

        // Checked even when the command line would override it.
        let applied = apply_text("[worker]\nconcurrency = 2\n").unwrap();
        assert_eq!(
            *matches(applied, &["--concurrency", "5"])
                .get_one::<u32>("concurrency")
                .unwrap(),
            5
        );
    }

    #[test]
    fn an_invalid_value_of_a_hidden_argument_is_not_shown() {
        let cmd = without_env(
            Command::new("snapq-test").arg(
                Arg::new("amqp-url")
                    .long("amqp-url")
                    .hide_env_values(true)
                    .value_parser(|s: &str| {
                        if s.starts_with("amqp") {
                            Ok(s.to_string())
                        } else {
                            Err(format!("'{s}' is not an amqp URL"))
                        }
                    }),
            ),
        );
        let conf = parse(&format!("[DEFAULT]\nhidden_url = rabbit://u:{SECRET}@h\n"));
        let err = apply(cmd, &conf, &only("amqp-url"), &[], &[]).unwrap_err();
        assert!(
            matches!(err, ConfFileError::InvalidValue { value: None, .. }),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(
            shown.contains("[DEFAULT] hidden_url (value not shown)"),
            "{shown}"
        );
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!format!("{err:?}").contains(SECRET));

        // A valid one is used, and kept out of --help.
        let applied =
            apply_text(&format!("[DEFAULT]\nhidden_url = amqp://u:{SECRET}@h\n")).unwrap();
        let mut cmd = applied.command.clone();
        assert!(!cmd.render_long_help().to_string().contains(SECRET));
        assert_eq!(
            one(&matches(applied, &[]), "amqp-url"),
            format!("amqp://u:{SECRET}@h")
        );
    }

    #[test]
    fn secrets_are_collected_and_never_shown() {
        let text = format!(
            "[DEFAULT]\n\
             transport_url = rabbit://snapq:{SECRET}@rabbit:5672/\n\
             [keystone_authtoken]\n\
             password = \"{SECRET}$$\"\n"
        );
        let conf = parse(&text);
        assert!(!format!("{conf:?}").contains(SECRET), "{conf:?}");
        let applied = apply(worker_command(), &conf, OPTS, SECRETS, STRICT).unwrap();
        let url = applied.secrets.get("transport_url").unwrap();
        assert_eq!(
            url.as_str(),
            format!("rabbit://snapq:{SECRET}@rabbit:5672/")
        );
        assert_eq!(url.line(), 2);
        assert_eq!(
            applied.secrets.get("keystone_password").unwrap().as_str(),
            format!("{SECRET}$")
        );
        assert!(applied.warnings.is_empty(), "{:?}", applied.warnings);
        let debug = format!("{applied:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("keystone_password"), "{debug}");
        let mut cmd = applied.command;
        assert!(!cmd.render_long_help().to_string().contains(SECRET));

        // A reference in a secret names the option, not the reference.
        let err =
            apply_text(&format!("[keystone_authtoken]\npassword = {SECRET}$abc\n")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfFileError::Substitution {
                    reference: None,
                    ..
                }
            ),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(shown.contains("[keystone_authtoken] password"), "{shown}");
        assert!(!shown.contains(SECRET) && !shown.contains("abc"), "{shown}");
        assert!(!format!("{err:?}").contains(SECRET));
    }

    #[test]
    fn unknown_options_are_errors_in_strict_sections_and_warnings_elsewhere() {
        let err = apply_text("[worker]\nconcurency = 2\n").unwrap_err();
        assert!(
            matches!(&err, ConfFileError::UnknownOption { at, .. } if at.line == 2),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "snapq.conf line 2: [worker] concurency: unknown option"
        );

        let err = apply_text("[glance]\nlocation-api = new\n").unwrap_err();
        assert!(
            err.to_string().ends_with("(did you mean location_api?)"),
            "{err}"
        );

        let applied = apply_text(
            "[keystone_authtoken]\nmemcached_servers = m:11211\n[default]\ntransport_url = x\n",
        )
        .unwrap();
        let shown: Vec<String> = applied.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "snapq.conf line 2: [keystone_authtoken] memcached_servers: unknown option, ignored",
                "snapq.conf line 4: [default] transport_url: unknown option, ignored \
                 (oslo.config reads [DEFAULT] only in capitals)",
            ]
        );
        assert!(applied.secrets.get("transport_url").is_none());
    }

    #[test]
    fn boolean_flags_take_oslo_spellings() {
        for (spelling, expected) in [
            ("true", true),
            ("Yes", true),
            ("ON", true),
            ("1", true),
            ("false", false),
            ("no", false),
            ("Off", false),
            ("0", false),
        ] {
            let text = format!(
                "[oslo_messaging_rabbit]\namqp_durable_queues = {spelling}\n\
                 [worker]\nflatten = {spelling}\n"
            );
            let m = matches(apply_text(&text).unwrap(), &[]);
            assert_eq!(m.get_flag("exchange-durable"), expected, "{spelling}");
            // SetFalse: the stored value is the option's value, the flag turns it off.
            assert_eq!(m.get_flag("no-flatten"), expected, "{spelling}");
        }

        let off = "[oslo_messaging_rabbit]\namqp_durable_queues = false\n[worker]\nflatten = on\n";
        let m = matches(
            apply_text(off).unwrap(),
            &["--exchange-durable", "--no-flatten"],
        );
        assert!(
            m.get_flag("exchange-durable"),
            "the command line turns the flag on"
        );
        assert!(
            !m.get_flag("no-flatten"),
            "the command line turns the option off"
        );
        let m = matches(apply_text(off).unwrap(), &[]);
        assert!(!m.get_flag("exchange-durable"));

        let err = apply_text("[oslo_messaging_rabbit]\namqp_durable_queues = maybe\n").unwrap_err();
        assert!(
            err.to_string().contains(
                "[oslo_messaging_rabbit] amqp_durable_queues = 'maybe': invalid value: expected a boolean"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_boolean_flag_set_by_the_file_is_turned_off_by_its_variable() {
        const VAR: &str = "SNAPQ_CONFFILE_TEST_BOOLEAN_FLAG";
        let command = || {
            Command::new("snapq-test").arg(
                Arg::new("exchange-durable")
                    .long("exchange-durable")
                    .env(VAR)
                    .action(ArgAction::SetTrue),
            )
        };
        let conf = parse("[oslo_messaging_rabbit]\namqp_durable_queues = yes\n");
        let get = || {
            let applied = apply(command(), &conf, &only("exchange-durable"), &[], &[]).unwrap();
            matches(applied, &[]).get_flag("exchange-durable")
        };
        std::env::remove_var(VAR);
        assert!(get());
        std::env::set_var(VAR, "false");
        assert!(!get());
        std::env::remove_var(VAR);
    }

    #[test]
    fn list_options_take_oslo_comma_separated_form() {
        let m = matches(
            apply_text("[glance]\nstores = rbd, file ,http,\n").unwrap(),
            &[],
        );
        assert_eq!(many(&m, "stores"), ["rbd", "file", "http"]);

        let m = matches(apply_text("[glance]\nstores = a,\n  b\n").unwrap(), &[]);
        assert_eq!(many(&m, "stores"), ["a", "b"]);

        let m = matches(
            apply_text("[glance]\nstores = a\nstores = c,d\n").unwrap(),
            &[],
        );
        assert_eq!(many(&m, "stores"), ["c", "d"], "the last line wins");

        let m = matches(apply_text("[glance]\nstores =\n").unwrap(), &[]);
        assert!(
            many(&m, "stores").is_empty(),
            "empty is an empty list, not the default"
        );

        let m = matches(
            apply_text("[glance]\nstores = a,b\n").unwrap(),
            &["--stores", "x,y"],
        );
        assert_eq!(many(&m, "stores"), ["x", "y"]);

        let m = matches(apply_text("").unwrap(), &[]);
        assert_eq!(many(&m, "stores"), ["rbd"]);
    }

    #[test]
    fn multi_valued_options_accumulate_every_line() {
        let m = matches(
            apply_text("[glance]\nextra_header = a: 1\nextra_header = b: 2\n").unwrap(),
            &[],
        );
        assert_eq!(many(&m, "extra-header"), ["a: 1", "b: 2"]);
    }

    #[test]
    fn a_required_argument_is_satisfied_by_the_file() {
        let cmd = Command::new("snapq-test").arg(Arg::new("topic").long("topic").required(true));
        assert!(cmd.clone().try_get_matches_from(["snapq-test"]).is_err());
        let conf = parse("[DEFAULT]\ncontrol_exchange_topic = jobs\n");
        let applied = apply(cmd, &conf, &only("topic"), &[], &[]).unwrap();
        assert_eq!(one(&matches(applied, &[]), "topic"), "jobs");
    }

    #[test]
    fn arguments_of_subcommands_and_global_arguments_are_set_too() {
        let cmd = Command::new("snapq")
            .arg(Arg::new("concurrency").long("concurrency").global(true))
            .subcommand(Command::new("jobs").subcommand(
                Command::new("purge").arg(Arg::new("topic").long("topic").required(true)),
            ));
        let conf = parse("[DEFAULT]\ncontrol_exchange_topic = t\n[worker]\nconcurrency = 3\n");
        let applied = apply(
            cmd,
            &conf,
            &[only("topic"), only("concurrency")].concat(),
            &[],
            &[],
        )
        .unwrap();
        let m = applied
            .command
            .try_get_matches_from(["snapq", "jobs", "purge"])
            .unwrap();
        let purge = m
            .subcommand_matches("jobs")
            .and_then(|jobs| jobs.subcommand_matches("purge"))
            .unwrap();
        assert_eq!(one(purge, "topic"), "t");
        assert_eq!(one(purge, "concurrency"), "3");
    }

    #[test]
    fn an_option_bound_to_a_missing_argument_is_an_error_even_unset() {
        let spec = [OptSpec {
            section: "worker",
            option: "concurrency",
            arg_id: "no-such-arg",
        }];
        let err = apply(worker_command(), &parse(""), &spec, &[], &[]).unwrap_err();
        assert!(
            matches!(err, ConfFileError::NoSuchArgument { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("no-such-arg"), "{err}");
    }

    #[test]
    fn dollars_are_read_as_oslo_reads_them() {
        assert_eq!(unescape_dollars("a$$b").unwrap(), "a$b");
        assert_eq!(unescape_dollars("a\\$b").unwrap(), "a$b");
        assert_eq!(unescape_dollars("cost: 5$").unwrap(), "cost: 5$");
        assert_eq!(unescape_dollars("$1 ${ $}").unwrap(), "$1 ${ $}");
        assert_eq!(unescape_dollars("${open").unwrap(), "${open");
        assert_eq!(unescape_dollars("x$foo.bar-y").unwrap_err(), "$foo.bar");
        assert_eq!(
            unescape_dollars("${Group.opt}").unwrap_err(),
            "${Group.opt}"
        );

        let m = matches(
            apply_text("[DEFAULT]\ncontrol_exchange_topic = a$$b\n").unwrap(),
            &[],
        );
        assert_eq!(one(&m, "topic"), "a$b");
        let err = apply_text("[DEFAULT]\ncontrol_exchange_topic = $host\n").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "snapq.conf line 2: [DEFAULT] control_exchange_topic: the value refers to \
                 another option with '$host'"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_file_with_secrets_open_to_group_or_others_gives_a_warning() {
        let secret = format!("[keystone_authtoken]\npassword = {SECRET}\n");
        for (mode, warned) in [(0o600, false), (0o400, false), (0o640, true), (0o644, true)] {
            let file = TempFile::new("snapq.conf", secret.as_bytes(), mode);
            let conf = ConfFile::read(&[&file.path]).unwrap();
            let applied = apply(worker_command(), &conf, OPTS, SECRETS, STRICT).unwrap();
            let expected: Vec<Warning> = if warned {
                vec![Warning::SecretFileMode {
                    path: file.path.clone(),
                    mode: 0o100000 | mode,
                }]
            } else {
                vec![]
            };
            assert_eq!(applied.warnings, expected, "{mode:o}");
            for warning in &applied.warnings {
                let shown = warning.to_string();
                assert!(shown.contains(&format!("mode {mode:04o}")), "{shown}");
                assert!(shown.contains(&file.path.display().to_string()), "{shown}");
                assert!(!shown.contains(SECRET), "{shown}");
            }
        }
        let no_secret = TempFile::new("snapq.conf", b"[worker]\nconcurrency = 2\n", 0o644);
        let conf = ConfFile::read(&[&no_secret.path]).unwrap();
        let applied = apply(worker_command(), &conf, OPTS, SECRETS, STRICT).unwrap();
        assert!(applied.warnings.is_empty(), "{:?}", applied.warnings);
    }
}
