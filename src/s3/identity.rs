//! Which AWS identity a command uses, chosen as the AWS CLI chooses it, and said in `-v` and `--json`.
//!
//! The order (docs/dit.md):
//! 1. `--profile NAME`: that profile, and only it; keys in the environment are not used.
//! 2. `AWS_PROFILE=NAME`: that profile too (the AWS CLI lets environment keys win here; tally does
//!    not, and warns when both are set, so that a profile never silently means another account).
//! 3. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY`.
//! 4. The `default` profile, then web identity, container and instance credentials (the SDK chain).
//!
//! A named profile that is in neither the config file nor the credentials file is an error before
//! anything is read or sent.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::OnceLock;

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_runtime::env_config::file::EnvConfigFiles;
use aws_sdk_s3::config::{Region, SharedCredentialsProvider};
use serde::Serialize;

use crate::s3::ConnectError;

/// Where a command's credentials come from. Never holds a key or a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Identity {
    /// `profile`, `environment` or `default chain`.
    pub source: &'static str,
    /// The profile, when the source is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// What chose the profile: `--profile`, `AWS_PROFILE`, or `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen_by: Option<&'static str>,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.profile, self.chosen_by) {
            (Some(p), Some("default")) => write!(f, "profile {p} (no --profile or AWS_PROFILE)"),
            (Some(p), Some(by)) => write!(f, "profile {p} (from {by})"),
            (Some(p), None) => write!(f, "profile {p}"),
            (None, _) if self.source == "environment" => {
                write!(
                    f,
                    "environment keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
                )
            }
            (None, _) => write!(
                f,
                "the AWS default chain (web identity, container or instance credentials)"
            ),
        }
    }
}

/// What the environment and the profile files say, as [`choose`] reads them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Inputs {
    /// `--profile`.
    pub(crate) flag: Option<String>,
    /// `AWS_PROFILE`.
    pub(crate) env_profile: Option<String>,
    /// Both `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` are set.
    pub(crate) env_keys: bool,
    /// The profiles defined in the config and credentials files.
    pub(crate) profiles: Vec<String>,
}

/// The identity [`Inputs`] select, with a warning to print when keys in the environment are set
/// aside; or the error for a profile that does not exist.
pub(crate) fn choose(i: &Inputs, files: &str) -> Result<(Identity, Option<String>), ConnectError> {
    let named = i
        .flag
        .as_ref()
        .map(|p| (p, "--profile"))
        .or(i.env_profile.as_ref().map(|p| (p, "AWS_PROFILE")));
    if let Some((p, by)) = named {
        if !i.profiles.iter().any(|q| q == p) {
            return Err(ConnectError(format!(
                "the config profile ({p}) could not be found in {files}: check the name (from {by}), or add it with `aws configure --profile {p}`"
            )));
        }
        let warning = (i.env_keys && by == "AWS_PROFILE").then(|| {
            format!(
                "AWS_PROFILE={p} and AWS_ACCESS_KEY_ID are both set: tally uses the profile {p} (the AWS CLI would use the environment keys); unset one of them"
            )
        });
        let id = Identity {
            source: "profile",
            profile: Some(p.clone()),
            chosen_by: Some(by),
        };
        return Ok((id, warning));
    }
    let id = if i.env_keys {
        Identity {
            source: "environment",
            profile: None,
            chosen_by: None,
        }
    } else if i.profiles.iter().any(|q| q == "default") {
        Identity {
            source: "profile",
            profile: Some("default".into()),
            chosen_by: Some("default"),
        }
    } else {
        Identity {
            source: "default chain",
            profile: None,
            chosen_by: None,
        }
    };
    Ok((id, None))
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home_file(var: &str, rel: &str) -> PathBuf {
    env_nonempty(var).map_or_else(
        || {
            let home = env_nonempty("HOME").unwrap_or_else(|| "~".into());
            PathBuf::from(home).join(rel)
        },
        PathBuf::from,
    )
}

/// The config and credentials files, as the error for a missing profile names them.
pub(crate) fn profile_files() -> String {
    format!(
        "{} or {}",
        home_file("AWS_CONFIG_FILE", ".aws/config").display(),
        home_file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials").display()
    )
}

/// Reads the environment and the profile files (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`,
/// or `~/.aws/config` and `~/.aws/credentials`) with the SDK's own parser.
async fn inputs(flag: Option<&str>) -> Result<Inputs, ConnectError> {
    use aws_types::os_shim_internal::{Env, Fs};
    let set = aws_config::profile::load(
        &Fs::real(),
        &Env::real(),
        &EnvConfigFiles::default(),
        None::<Cow<'static, str>>,
    )
    .await
    .map_err(|e| ConnectError(format!("reading the AWS profile files: {e}")))?;
    Ok(Inputs {
        flag: flag.filter(|p| !p.is_empty()).map(str::to_owned),
        env_profile: env_nonempty("AWS_PROFILE"),
        env_keys: env_nonempty("AWS_ACCESS_KEY_ID").is_some()
            && env_nonempty("AWS_SECRET_ACCESS_KEY").is_some(),
        profiles: set.profiles().map(str::to_owned).collect(),
    })
}

/// The identity this process uses (the first connection's), for reports.
static USED: OnceLock<Identity> = OnceLock::new();

/// The identity the first connection of this process used, if one was made.
pub(crate) fn used() -> Option<&'static Identity> {
    USED.get()
}

/// `report` as JSON, with the identity this process used as its `identity` field (when `report`
/// is an object and a connection was made).
pub(crate) fn stamp<T: Serialize>(report: &T) -> serde_json::Value {
    let mut v = serde_json::to_value(report).expect("reports serialize");
    if let (Some(map), Some(id)) = (v.as_object_mut(), used()) {
        map.insert(
            "identity".into(),
            serde_json::to_value(id).expect("identities serialize"),
        );
    }
    v
}

/// What [`resolve`] decided: the profile named by `--profile` or `AWS_PROFILE`, if any, which
/// supplies the credentials and the rest of the configuration (region, endpoint).
pub(crate) struct Resolved {
    /// The profile.
    pub(crate) profile: Option<String>,
    /// No keys in the environment and no profile: only the rest of the SDK's chain (web
    /// identity, container, instance metadata) can give credentials.
    pub(crate) chain_only: bool,
}

/// Fails with one line when the SDK's chain finds no credentials.
pub(crate) async fn check_chain(shared: &aws_config::SdkConfig) -> Result<(), ConnectError> {
    use aws_sdk_s3::config::ProvideCredentials as _;
    let Some(p) = shared.credentials_provider() else {
        return Err(no_credentials());
    };
    match p.provide_credentials().await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::debug!("the credentials chain found none: {e}");
            Err(no_credentials())
        }
    }
}

fn no_credentials() -> ConnectError {
    ConnectError(format!(
        "no AWS credentials found (no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, no profile in {}, no container or instance credentials): pass --profile NAME, or set the keys",
        profile_files()
    ))
}

/// Chooses the identity for `flag` (`--profile`) and the environment; logs it (`-v`) and keeps it
/// for the reports.
pub(crate) async fn resolve(flag: Option<&str>) -> Result<Resolved, ConnectError> {
    let i = inputs(flag).await?;
    let (identity, warning) = choose(&i, &profile_files())?;
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    tracing::info!("identity: {identity}");
    let chain_only = identity.source == "default chain";
    let _ = USED.set(identity);
    let profile = i.flag.or(i.env_profile);
    Ok(Resolved {
        profile,
        chain_only,
    })
}

/// The credentials of `profile` alone (never the environment's keys), for a client in `region`.
pub(crate) fn profile_provider(profile: &str, region: Option<Region>) -> SharedCredentialsProvider {
    let conf = ProviderConfig::default().with_region(region);
    SharedCredentialsProvider::new(
        ProfileFileCredentialsProvider::builder()
            .configure(&conf)
            .profile_name(profile)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(flag: Option<&str>, env: Option<&str>, keys: bool, profiles: &[&str]) -> Inputs {
        Inputs {
            flag: flag.map(str::to_owned),
            env_profile: env.map(str::to_owned),
            env_keys: keys,
            profiles: profiles.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn a_named_profile_wins_over_environment_keys() {
        for keys in [false, true] {
            for (flag, env, want, by) in [
                (Some("studio"), None, "studio", "--profile"),
                (Some("studio"), Some("other"), "studio", "--profile"),
                (None, Some("studio"), "studio", "AWS_PROFILE"),
            ] {
                let (id, warn) =
                    choose(&inputs(flag, env, keys, &["studio", "other"]), "F").unwrap();
                assert_eq!(id.source, "profile");
                assert_eq!(id.profile.as_deref(), Some(want));
                assert_eq!(id.chosen_by, Some(by));
                assert_eq!(
                    warn.is_some(),
                    keys && by == "AWS_PROFILE",
                    "{flag:?} {env:?}"
                );
            }
        }
    }

    #[test]
    fn a_missing_profile_is_an_error_naming_the_files() {
        for (flag, env) in [(Some("studio"), None), (None, Some("studio"))] {
            for keys in [false, true] {
                let e = choose(
                    &inputs(flag, env, keys, &["default"]),
                    "/x/config or /x/creds",
                )
                .unwrap_err()
                .to_string();
                assert!(
                    e.starts_with(
                        "the config profile (studio) could not be found in /x/config or /x/creds"
                    ),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn without_a_named_profile_keys_then_default_then_the_chain() {
        let (id, _) = choose(&inputs(None, None, true, &["default"]), "F").unwrap();
        assert_eq!(id.source, "environment");
        let (id, _) = choose(&inputs(None, None, false, &["default"]), "F").unwrap();
        assert_eq!(id.profile.as_deref(), Some("default"));
        let (id, _) = choose(&inputs(None, None, false, &[]), "F").unwrap();
        assert_eq!(id.source, "default chain");
        assert!(id.to_string().contains("default chain"));
    }
}
