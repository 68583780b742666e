//! Which account a command uses: `--profile` and `AWS_PROFILE` against keys in the environment and
//! the `default` profile, with real config and credentials files, against Garage's two accounts
//! (`scripts/garage start` makes a second key that owns only its own bucket). An upload into an
//! account's bucket succeeds only with that account's keys, so each case proves which identity was
//! really used; the `--json` report must name the same one.

use std::path::Path;

use crate::support::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Account {
    A,
    B,
}

struct Accounts {
    a: (String, String, String),
    b: (String, String, String),
}

impl Accounts {
    fn of(s: &Server) -> Accounts {
        let var = |k: &str| {
            s.var(k)
                .unwrap_or_else(|| {
                    panic!(
                        "{k} missing from the server's env: restart it with scripts/garage start"
                    )
                })
                .to_owned()
        };
        Accounts {
            a: (s.access_key().into(), s.secret().into(), s.bucket.clone()),
            b: (
                var("TALLY_OTHER_ACCESS_KEY_ID"),
                var("TALLY_OTHER_SECRET_ACCESS_KEY"),
                var("TALLY_OTHER_BUCKET"),
            ),
        }
    }

    fn get(&self, a: Account) -> &(String, String, String) {
        match a {
            Account::A => &self.a,
            Account::B => &self.b,
        }
    }

    /// Writes a config file and a credentials file: profiles `client-a` and `client-b` (keys in
    /// the credentials file, region in the config file), `cfg-b` (keys in the config file), and a
    /// `default` profile holding `default`'s keys when given.
    fn write_files(&self, dir: &Path, default: Option<Account>) -> (String, String) {
        let config = dir.join("config");
        let creds = dir.join("credentials");
        let keys = |a: Account| {
            let (id, secret, _) = self.get(a);
            format!("aws_access_key_id = {id}\naws_secret_access_key = {secret}\n")
        };
        let mut c = String::from(
            "[profile client-a]\nregion = us-east-1\n\n[profile client-b]\nregion = us-east-1\n\n",
        );
        c.push_str(&format!(
            "[profile cfg-b]\nregion = us-east-1\n{}",
            keys(Account::B)
        ));
        let mut k = format!(
            "[client-a]\n{}\n[client-b]\n{}",
            keys(Account::A),
            keys(Account::B)
        );
        if let Some(d) = default {
            k.push_str(&format!("\n[default]\n{}", keys(d)));
        }
        std::fs::write(&config, c).unwrap();
        std::fs::write(&creds, k).unwrap();
        (
            config.to_str().unwrap().to_owned(),
            creds.to_str().unwrap().to_owned(),
        )
    }
}

/// One run's setting: keys in the environment, `--profile`, `AWS_PROFILE`, the default profile.
#[derive(Clone, Debug)]
struct Case {
    env_keys: Option<Account>,
    flag: Option<&'static str>,
    aws_profile: Option<&'static str>,
    default: Option<Account>,
}

/// What the AWS CLI's order (with `AWS_PROFILE` also winning over environment keys) says.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Uses(Account, &'static str),
    MissingProfile,
    NoCredentials,
}

fn profile_account(p: &str) -> Option<Account> {
    match p {
        "client-a" => Some(Account::A),
        "client-b" | "cfg-b" => Some(Account::B),
        _ => None,
    }
}

fn expected(c: &Case) -> Expect {
    if let Some(p) = c.flag.or(c.aws_profile) {
        return profile_account(p).map_or(Expect::MissingProfile, |a| Expect::Uses(a, "profile"));
    }
    match (c.env_keys, c.default) {
        (Some(a), _) => Expect::Uses(a, "environment"),
        (None, Some(a)) => Expect::Uses(a, "profile"),
        (None, None) => Expect::NoCredentials,
    }
}

/// Runs `tally upload` of `file` into the bucket of the account `c` should use (account A's when
/// none) with `c`'s settings; returns what happened, or a description of the mismatch.
fn run_case(
    s: &Server,
    acc: &Accounts,
    dir: &Path,
    file: &Path,
    c: &Case,
    n: usize,
) -> Option<String> {
    let case_dir = dir.join(format!("case{n}"));
    std::fs::create_dir_all(&case_dir).unwrap();
    let (config, creds) = acc.write_files(&case_dir, c.default);
    let want = expected(c);
    let bucket = match &want {
        Expect::Uses(a, _) => acc.get(*a).2.clone(),
        _ => acc.a.2.clone(),
    };
    let key = unique(&format!("identity/case{n}"));
    let mut cmd = s.command();
    cmd.env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    if let Some(a) = c.env_keys {
        let (id, secret, _) = acc.get(a);
        cmd.env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret);
    }
    if let Some(p) = c.aws_profile {
        cmd.env("AWS_PROFILE", p);
    }
    cmd.args(["upload", file.to_str().unwrap()])
        .arg(format!("s3://{bucket}/{key}"))
        .args(["--json", "--quiet"]);
    if let Some(p) = c.flag {
        cmd.args(["--profile", p]);
    }
    let out = run_bounded(&mut cmd, TALLY_BOUND, &format!("tally upload ({c:?})"));
    let err = stderr(&out);
    let code = out.status.code();
    let mismatch = |what: &str| Some(format!("{c:?}: expected {want:?}, {what}: {err}"));
    match want {
        Expect::Uses(_, source) => {
            if code != Some(0) {
                return mismatch(&format!("exit {code:?}"));
            }
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let id = &r["identity"];
            let profile = c.flag.or(c.aws_profile).or(c.default.map(|_| "default"));
            let want_profile = if source == "profile" { profile } else { None };
            if id["source"] != source || id["profile"].as_str() != want_profile {
                return mismatch(&format!("the report names {id}"));
            }
            None
        }
        Expect::MissingProfile => {
            let p = c.flag.or(c.aws_profile).unwrap();
            let line =
                format!("the config profile ({p}) could not be found in {config} or {creds}");
            if code != Some(2) || err.lines().count() != 1 || !err.contains(&line) {
                return mismatch(&format!("exit {code:?}"));
            }
            None
        }
        Expect::NoCredentials => {
            let one_line = err.lines().count() == 1 && err.contains("no AWS credentials found");
            (code != Some(2) || !one_line)
                .then(|| format!("{c:?}: no credentials: exit {code:?}: {err}"))
        }
    }
}

#[test]
fn the_profile_named_is_the_account_used() {
    let s = garage();
    let acc = Accounts::of(s);
    let dir = s.temp_dir();
    let file = random_file(dir.path(), "clip.mov", 2000, 91);
    let names = [None, Some("client-a"), Some("client-b"), Some("studio")];
    let mut cases = Vec::new();
    for env_keys in [None, Some(Account::A), Some(Account::B)] {
        for flag in names {
            for aws_profile in names {
                cases.push(Case {
                    env_keys,
                    flag,
                    aws_profile,
                    default: None,
                });
            }
        }
    }
    // The default profile, under keys in the environment or alone; a profile whose keys are in
    // the config file.
    for env_keys in [None, Some(Account::A)] {
        cases.push(Case {
            env_keys,
            flag: None,
            aws_profile: None,
            default: Some(Account::B),
        });
    }
    cases.push(Case {
        env_keys: Some(Account::A),
        flag: Some("cfg-b"),
        aws_profile: None,
        default: Some(Account::A),
    });
    let wrong: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(n, c)| run_case(s, &acc, dir.path(), &file, c, n))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} cases used another identity than the one named:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// With `--profile`, account B's keys cannot reach account A's bucket even when A's keys are in
/// the environment: the media cannot land in A's account.
#[test]
fn a_profile_without_access_is_denied_though_the_environment_has_access() {
    let s = garage();
    let acc = Accounts::of(s);
    let dir = s.temp_dir();
    let file = random_file(dir.path(), "clip.mov", 2000, 92);
    let (config, creds) = acc.write_files(dir.path(), None);
    let key = unique("identity/denied");
    for how in ["--profile", "AWS_PROFILE"] {
        let mut cmd = s.command();
        cmd.env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &creds);
        cmd.args(["upload", file.to_str().unwrap(), &s.url(&key)]);
        if how == "--profile" {
            cmd.args(["--profile", "client-b"]);
        } else {
            cmd.env("AWS_PROFILE", "client-b");
        }
        let out = run_bounded(
            &mut cmd,
            TALLY_BOUND,
            "tally upload (profile without access)",
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{how}: {err}");
        assert!(
            err.contains("not allowed") || err.contains("AccessDenied"),
            "{how}: {err}"
        );
        assert!(s.head(&key).is_none(), "{how}: the object was written");
    }
}

/// `-v` says which identity is used, and never a key.
#[test]
fn verbose_names_the_identity_never_the_key() {
    let s = garage();
    let acc = Accounts::of(s);
    let dir = s.temp_dir();
    let file = random_file(dir.path(), "clip.mov", 2000, 93);
    let (config, creds) = acc.write_files(dir.path(), None);
    let mut cmd = s.command();
    cmd.env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .args([
            "upload",
            file.to_str().unwrap(),
            &s.url(&unique("identity/v")),
        ])
        .args(["--profile", "client-a", "-v"]);
    let out = run_bounded(&mut cmd, TALLY_BOUND, "tally upload -v");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("identity: profile client-a (from --profile)"),
        "{err}"
    );
    for (id, secret, _) in [&acc.a, &acc.b] {
        assert!(!err.contains(id.as_str()) && !err.contains(secret.as_str()));
    }
}
