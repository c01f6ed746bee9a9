//! `keyward.toml`: the CLI's settings in a file, read into typed structs (unknown keys and wrong
//! types are errors with the file, line and key). What a run uses is decided field by field:
//! a flag, then the environment, then the chosen profile, then the file, then the default.
//! A credential is never read from the file, only the name of the variable that holds it.

use keyward::providers::registry::ProviderKind;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The file read when neither `--config` nor `KEYWARD_CONFIG` names one.
pub const DEFAULT_FILE: &str = "keyward.toml";

/// The CLI's own CMS connection (policies without a `connectionRef`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CmsSection {
    pub provider: Option<ProviderKind>,
    pub url: Option<String>,
    /// The NAME of the environment variable holding the credential.
    pub token_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Refused: only present to say so with its line.
    token: Option<toml::Spanned<toml::Value>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub secrets_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub cms: CmsSection,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub secrets_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub cms: CmsSection,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// A file that was read, with the directory its relative paths are relative to.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: FileConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read, or is not a regular file of a bounded size.
    #[error("cannot read the configuration file {0}")]
    File(keyward::files::ReadError),
    #[error("{}:{line}: {message}", .path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: there is no profile '{name}' (profiles: {known})", .path.display())]
    NoProfile {
        path: PathBuf,
        name: String,
        known: String,
    },
    /// The CMS URL cannot be used (it is not repeated: it may hold a password).
    #[error("cms.url (from {from}) {reason}")]
    Endpoint { from: Source, reason: String },
    #[error("--profile {0} needs a configuration file (keyward.toml, --config or KEYWARD_CONFIG)")]
    ProfileWithoutFile(String),
    /// A connection setting without the CMS it is for: the embedded CMS is used only when
    /// there is no connection setting at all, so a token never silently goes unused.
    #[error("{setting} (from {from}) is set but no CMS URL is (KEYWARD_CMS_URL, or cms.url in the configuration file); set the URL of the CMS it is for, or unset it to use the embedded reference CMS")]
    NoEndpoint { setting: String, from: Source },
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses `text` (the contents of `path`).
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let config: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        message: e.message().trim().to_owned(),
    })?;
    let tokens = std::iter::once(("cms.token".to_owned(), &config.cms)).chain(
        config
            .profiles
            .iter()
            .map(|(n, p)| (format!("profiles.{n}.cms.token"), &p.cms)),
    );
    for (key, cms) in tokens {
        if let Some(t) = &cms.token {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: line_of(text, t.span().start),
                message: format!(
                    "{key}: a credential is never stored in the file; set token_env to the name of the environment variable that holds it"
                ),
            });
        }
    }
    Ok(config)
}

/// Reads the named file (which must exist), or `keyward.toml` in the current directory if there
/// is one.
pub fn load(named: Option<&Path>) -> Result<Option<Loaded>, ConfigError> {
    let path = match named {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_FILE).is_file() => PathBuf::from(DEFAULT_FILE),
        None => return Ok(None),
    };
    let text = keyward::files::read_small_text(&path, keyward::files::MAX_SMALL_FILE)
        .map_err(ConfigError::File)?;
    let config = parse(&path, &text)?;
    Ok(Some(Loaded { path, config }))
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(String),
    Profile(String),
    File,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Profile(p) => write!(f, "profile {p}"),
            Source::File => f.write_str("file"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One setting and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// What the command line and the environment say, before the file is consulted.
#[derive(Clone, Debug, Default)]
pub struct Given {
    pub secrets_dir: Option<(PathBuf, Source)>,
    pub data_dir: Option<(PathBuf, Source)>,
    pub ca_file: Option<(PathBuf, Source)>,
    pub profile: Option<String>,
}

/// The settings a run uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Effective {
    pub file: Option<PathBuf>,
    pub profile: Option<String>,
    pub secrets_dir: Setting<PathBuf>,
    pub data_dir: Setting<PathBuf>,
    pub provider: Setting<ProviderKind>,
    pub url: Setting<Option<String>>,
    /// The name of the variable with the credential.
    pub token_env: Setting<String>,
    pub ca_file: Setting<Option<PathBuf>>,
}

fn defaulted<T>(value: T) -> Setting<T> {
    Setting {
        value,
        source: Source::Default,
    }
}

/// A setting that may be unset (unset: `None` from the defaults).
fn optional<T>(s: Option<Setting<T>>) -> Setting<Option<T>> {
    match s {
        Some(s) => Setting {
            value: Some(s.value),
            source: s.source,
        },
        None => defaulted(None),
    }
}

/// The first that is set: a flag or environment value, the profile's, the file's.
fn pick<T: Clone>(
    given: Option<(T, Source)>,
    profile: Option<(&String, Option<T>)>,
    file: Option<T>,
) -> Option<Setting<T>> {
    if let Some((value, source)) = given {
        return Some(Setting { value, source });
    }
    if let Some((name, Some(value))) = profile {
        return Some(Setting {
            value,
            source: Source::Profile(name.clone()),
        });
    }
    file.map(|value| Setting {
        value,
        source: Source::File,
    })
}

/// Without a CMS URL, no other connection setting may be given: a token that is set, or a
/// provider other than the reference CMS (the embedded one), would go nowhere.
fn nothing_without_an_endpoint(
    token_env: &Setting<String>,
    provider: &Setting<ProviderKind>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    let token = env(&token_env.value).map(|_| {
        let from = match &token_env.source {
            Source::Default | Source::Env(_) => Source::Env(token_env.value.clone()),
            other => other.clone(),
        };
        (token_env.value.clone(), from)
    });
    let provider_set = (provider.value != ProviderKind::Keyward).then(|| {
        (
            format!("the CMS provider '{}'", provider.value),
            provider.source.clone(),
        )
    });
    match token.or(provider_set) {
        Some((setting, from)) => Err(ConfigError::NoEndpoint { setting, from }),
        None => Ok(()),
    }
}

/// The CMS URL, refused before it is printed or used if keyward would not call it: it may
/// hold a password.
fn check_url(url: Option<&Setting<String>>) -> Result<(), ConfigError> {
    match url.map(|u| (u, keyward::model::check_endpoint(&u.value))) {
        Some((u, Err(reason))) => Err(ConfigError::Endpoint {
            from: u.source.clone(),
            reason,
        }),
        _ => Ok(()),
    }
}

/// The profile `name` of the file, if one is asked for.
fn profile_named<'a>(
    name: Option<&'a String>,
    loaded: Option<&'a Loaded>,
) -> Result<Option<(&'a String, &'a Profile)>, ConfigError> {
    match (name, loaded) {
        (None, _) => Ok(None),
        (Some(name), None) => Err(ConfigError::ProfileWithoutFile(name.clone())),
        (Some(name), Some(l)) => match l.config.profiles.get(name) {
            Some(p) => Ok(Some((name, p))),
            None => Err(ConfigError::NoProfile {
                path: l.path.clone(),
                name: name.clone(),
                known: l
                    .config
                    .profiles
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        },
    }
}

/// `KEYWARD_CMS_PROVIDER`, if set.
fn provider_from_env(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(ProviderKind, Source)>, ConfigError> {
    let Some(v) = env("KEYWARD_CMS_PROVIDER") else {
        return Ok(None);
    };
    let kind = v
        .parse::<ProviderKind>()
        .map_err(|message| ConfigError::Invalid {
            path: PathBuf::from("KEYWARD_CMS_PROVIDER"),
            line: 0,
            message,
        })?;
    Ok(Some((kind, Source::Env("KEYWARD_CMS_PROVIDER".into()))))
}

impl Effective {
    /// Decides every setting; `env` reads the environment (`KEYWARD_CMS_URL`,
    /// `KEYWARD_CMS_PROVIDER`, `KEYWARD_CMS_TOKEN`).
    pub fn resolve(
        given: Given,
        loaded: Option<&Loaded>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Effective, ConfigError> {
        let empty = FileConfig::default();
        let file = loaded.map_or(&empty, |l| &l.config);
        // Relative paths in the file are relative to the file.
        let base = loaded
            .and_then(|l| l.path.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let rel = |p: &Option<PathBuf>| p.as_ref().map(|p| base.join(p));
        let profile = profile_named(given.profile.as_ref(), loaded)?;
        let of = |f: &dyn Fn(&Profile) -> Option<PathBuf>| {
            profile.map(|(n, p)| (n, f(p).map(|v| base.join(v))))
        };
        let env_given = |var: &str| env(var).map(|v| (v, Source::Env(var.to_owned())));
        let secrets_dir = pick(
            given.secrets_dir,
            of(&|p| p.secrets_dir.clone()),
            rel(&file.secrets_dir),
        )
        .unwrap_or_else(|| defaulted(PathBuf::from(".keyward/secrets")));
        let data_dir = pick(
            given.data_dir,
            of(&|p| p.data_dir.clone()),
            rel(&file.data_dir),
        )
        .unwrap_or_else(|| defaulted(PathBuf::from(".keyward/cms")));
        let ca_file = pick(
            given.ca_file,
            of(&|p| p.cms.ca_file.clone()),
            rel(&file.cms.ca_file),
        );
        let cms_of =
            |f: &dyn Fn(&CmsSection) -> Option<String>| profile.map(|(n, p)| (n, f(&p.cms)));
        let url = pick(
            env_given("KEYWARD_CMS_URL"),
            cms_of(&|c| c.url.clone()),
            file.cms.url.clone(),
        );
        check_url(url.as_ref())?;
        let token_env = pick(
            env("KEYWARD_CMS_TOKEN").map(|_| {
                (
                    "KEYWARD_CMS_TOKEN".to_owned(),
                    Source::Env("KEYWARD_CMS_TOKEN".into()),
                )
            }),
            cms_of(&|c| c.token_env.clone()),
            file.cms.token_env.clone(),
        )
        .unwrap_or_else(|| defaulted("KEYWARD_CMS_TOKEN".to_owned()));
        let provider = pick(
            provider_from_env(env)?,
            profile.map(|(n, p)| (n, p.cms.provider)),
            file.cms.provider,
        )
        .unwrap_or_else(|| defaulted(ProviderKind::Keyward));
        if url.is_none() {
            nothing_without_an_endpoint(&token_env, &provider, env)?;
        }
        Ok(Effective {
            file: loaded.map(|l| l.path.clone()),
            profile: profile.map(|(n, _)| n.clone()),
            secrets_dir,
            data_dir,
            provider,
            url: optional(url),
            token_env,
            ca_file: optional(ca_file),
        })
    }

    /// The effective configuration for people: every setting and where it came from; the
    /// credential only as the name of its variable and whether it is set.
    pub fn describe(&self, token_set: bool) -> String {
        let mut out = String::new();
        let file = self
            .file
            .as_ref()
            .map_or("none".to_owned(), |p| p.display().to_string());
        out.push_str(&format!("{:<14} {file}\n", "file"));
        if let Some(p) = &self.profile {
            out.push_str(&format!("{:<14} {p}\n", "profile"));
        }
        let mut row = |name: &str, value: String, source: &Source| {
            out.push_str(&format!("{name:<14} {value:<40} ({source})\n"));
        };
        row(
            "secrets_dir",
            self.secrets_dir.value.display().to_string(),
            &self.secrets_dir.source,
        );
        row(
            "data_dir",
            self.data_dir.value.display().to_string(),
            &self.data_dir.source,
        );
        row(
            "cms.provider",
            self.provider.value.to_string(),
            &self.provider.source,
        );
        let url = self
            .url
            .value
            .clone()
            .unwrap_or_else(|| "(none: the embedded reference CMS)".into());
        row("cms.url", url, &self.url.source);
        let token = format!(
            "${} ({})",
            self.token_env.value,
            if token_set { "set" } else { "not set" }
        );
        row("cms.token_env", token, &self.token_env.source);
        let ca = self
            .ca_file
            .value
            .as_ref()
            .map_or("(none: the system's roots)".into(), |p| {
                p.display().to_string()
            });
        row("cms.ca_file", ca, &self.ca_file.source);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(text: &str) -> Loaded {
        let path = PathBuf::from("conf/keyward.toml");
        Loaded {
            config: parse(&path, text).unwrap(),
            path,
        }
    }

    #[test]
    fn unknown_keys_wrong_types_and_tokens_name_their_line() {
        let path = Path::new("k.toml");
        let e = parse(path, "secrets_dir = \"out\"\n[cms]\nurl = 3\n").unwrap_err();
        assert!(e.to_string().starts_with("k.toml:3: "), "{e}");
        let e = parse(path, "\n\nsecret_dir = \"out\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("k.toml:3: unknown field `secret_dir`"),
            "{e}"
        );
        let e = parse(path, "[cms]\nurl = \"https://x\"\ntoken = \"s3cret\"\n").unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("k.toml:3: cms.token: a credential is never stored"),
            "{m}"
        );
        assert!(!m.contains("s3cret"), "{m}");
        let e = parse(path, "[profiles.staging.cms]\ntoken = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("profiles.staging.cms.token"), "{e}");
        let e = parse(path, "[cms]\nprovider = \"sanity\"\n").unwrap_err();
        assert!(e.to_string().starts_with("k.toml:2: "), "{e}");
    }

    #[test]
    fn flags_then_environment_then_profile_then_file_then_defaults() {
        let l = loaded(
            "secrets_dir = \"out\"\n[cms]\nurl = \"https://cms\"\ntoken_env = \"CMS_TOKEN\"\nca_file = \"ca.pem\"\n[profiles.staging]\ndata_dir = \"stg\"\n[profiles.staging.cms]\nurl = \"https://cms.staging\"\n",
        );
        let none = |_: &str| None;
        let e = Effective::resolve(Given::default(), Some(&l), &none).unwrap();
        assert_eq!(
            e.secrets_dir,
            Setting {
                value: PathBuf::from("conf/out"),
                source: Source::File
            }
        );
        assert_eq!(e.data_dir.source, Source::Default);
        assert_eq!(e.url.value.as_deref(), Some("https://cms"));
        assert_eq!(e.token_env.value, "CMS_TOKEN");
        assert_eq!(e.ca_file.value, Some(PathBuf::from("conf/ca.pem")));
        let given = Given {
            profile: Some("staging".into()),
            secrets_dir: Some((PathBuf::from("flag-out"), Source::Flag)),
            ..Default::default()
        };
        let env = |k: &str| (k == "KEYWARD_CMS_PROVIDER").then(|| "strapi".to_owned());
        let e = Effective::resolve(given, Some(&l), &env).unwrap();
        assert_eq!(e.secrets_dir.source, Source::Flag);
        assert_eq!(
            e.data_dir,
            Setting {
                value: PathBuf::from("conf/stg"),
                source: Source::Profile("staging".into())
            }
        );
        assert_eq!(e.url.value.as_deref(), Some("https://cms.staging"));
        assert_eq!(
            e.provider,
            Setting {
                value: ProviderKind::Strapi,
                source: Source::Env("KEYWARD_CMS_PROVIDER".into())
            }
        );
        let described = e.describe(false);
        assert!(described.contains("$CMS_TOKEN (not set)"), "{described}");
        let e = Effective::resolve(
            Given {
                profile: Some("prod".into()),
                ..Default::default()
            },
            Some(&l),
            &none,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "conf/keyward.toml: there is no profile 'prod' (profiles: staging)"
        );
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/keyward.toml"
        ));
        let c = parse(path, &std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(c.cms.token_env.as_deref(), Some("CMS_TOKEN"));
        assert!(c.profiles.contains_key("staging"));
    }

    #[test]
    fn a_token_or_a_provider_without_a_url_is_refused_and_the_embedded_cms_needs_neither() {
        let resolve = |file: &str, vars: &[(&str, &str)]| {
            let l = loaded(file);
            Effective::resolve(Given::default(), Some(&l), &|k| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        let no_endpoint = |r: Result<Effective, ConfigError>| match r {
            Err(ConfigError::NoEndpoint { setting, from }) => format!("{setting} ({from})"),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            no_endpoint(resolve("", &[("KEYWARD_CMS_TOKEN", "t")])),
            "KEYWARD_CMS_TOKEN (env KEYWARD_CMS_TOKEN)"
        );
        assert_eq!(
            no_endpoint(resolve(
                "[cms]\ntoken_env = \"CMS_TOKEN\"\n",
                &[("CMS_TOKEN", "t")]
            )),
            "CMS_TOKEN (file)"
        );
        assert_eq!(
            no_endpoint(resolve("", &[("KEYWARD_CMS_PROVIDER", "directus")])),
            "the CMS provider 'directus' (env KEYWARD_CMS_PROVIDER)"
        );
        // Named but not set, or the reference CMS named: the embedded CMS.
        assert!(resolve(
            "[cms]\ntoken_env = \"CMS_TOKEN\"\nprovider = \"keyward\"\n",
            &[]
        )
        .is_ok());
        assert!(resolve(
            "",
            &[
                ("KEYWARD_CMS_URL", "http://cms"),
                ("KEYWARD_CMS_TOKEN", "t")
            ]
        )
        .is_ok());
    }
}
