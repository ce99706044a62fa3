//! The key-value commands: `put`, `get`, `delete`, `scan`, `txn`, `status`, on an embedded
//! database or a cluster (see [`crate::target`] for which).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use boundkv::{Db, Snapshot, Timestamp};
use clap::Args;

use crate::data_args::parse_timestamp;
use crate::fmt;
use crate::target::{Cluster, Committed, Target};

/// Which snapshot a read uses.
#[derive(Args, Debug, Clone)]
pub(crate) struct ReadAt {
    /// Read at exactly this timestamp (nanoseconds since the epoch, or RFC 3339) instead of now.
    #[arg(long, value_parser = parse_timestamp, value_name = "TS", conflicts_with = "max_staleness")]
    at: Option<Timestamp>,
    /// Read a snapshot at most this stale (e.g. 10s), without waiting for in-flight commits.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    max_staleness: Option<Duration>,
}

impl ReadAt {
    fn snapshot(&self, db: &Db) -> anyhow::Result<Snapshot> {
        Ok(match (self.at, self.max_staleness) {
            (Some(ts), _) => db.read_at(ts)?,
            (None, Some(d)) => db.read_stale(d)?,
            (None, None) => db.read_only()?,
        })
    }

    async fn remote(&self, c: &Cluster) -> anyhow::Result<boundkv_client::Snapshot> {
        Ok(match (self.at, self.max_staleness) {
            (Some(ts), _) => {
                c.client.read_at(boundkv_client::Timestamp::from_nanos(ts.as_nanos())).await?
            }
            (None, Some(d)) => c.client.read_stale(d).await?,
            (None, None) => c.client.read_only().await?,
        })
    }
}

/// `boundkv put KEY VALUE`.
#[derive(Args, Debug)]
pub(crate) struct Put {
    /// The key.
    key: String,
    /// The value.
    value: String,
}

/// `boundkv get KEY`.
#[derive(Args, Debug)]
pub(crate) struct Get {
    /// The key.
    key: String,
    #[command(flatten)]
    at: ReadAt,
}

/// `boundkv delete KEY`.
#[derive(Args, Debug)]
pub(crate) struct Delete {
    /// The key.
    key: String,
}

/// `boundkv scan [FROM] [TO]`.
#[derive(Args, Debug)]
pub(crate) struct Scan {
    /// First key (inclusive); default: the beginning.
    from: Option<String>,
    /// Last key (exclusive); default: the end.
    to: Option<String>,
    /// At most this many pairs.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    #[command(flatten)]
    at: ReadAt,
}

/// `boundkv txn [SCRIPT]`.
#[derive(Args, Debug)]
pub(crate) struct TxnCmd {
    /// Statements separated by `;` or newlines: `get KEY`, `put KEY VALUE`, `delete KEY`,
    /// `scan [FROM [TO]]`. Quote values with spaces ("like this"). Read from standard input when
    /// absent or `-`.
    script: Option<String>,
}

fn print_commit(out: &mut impl Write, what: &str, info: &Committed) -> std::io::Result<()> {
    writeln!(
        out,
        "{what} at {} ({}) in {}: commit wait {} (overlapped the {} {}; added {})",
        info.ts,
        info.ts.as_nanos(),
        fmt::duration(info.latency),
        fmt::duration(info.commit_wait),
        fmt::duration(info.durable),
        if info.replicated { "replication" } else { "durable write" },
        fmt::duration(info.wait_beyond_durable),
    )
}

impl Put {
    pub(crate) fn run(&self, target: Target) -> anyhow::Result<ExitCode> {
        let info = match target {
            Target::Embedded(db) => Committed::local(&db.put(&self.key, &self.value)?),
            Target::Cluster(c) => {
                Committed::remote(&c.block_on(c.client.put(&self.key, &self.value))?)
            }
        };
        print_commit(&mut std::io::stdout(), "committed", &info)?;
        Ok(ExitCode::SUCCESS)
    }
}

impl Delete {
    pub(crate) fn run(&self, target: Target) -> anyhow::Result<ExitCode> {
        let info = match target {
            Target::Embedded(db) => Committed::local(&db.delete(&self.key)?),
            Target::Cluster(c) => Committed::remote(&c.block_on(c.client.delete(&self.key))?),
        };
        print_commit(&mut std::io::stdout(), "deleted", &info)?;
        Ok(ExitCode::SUCCESS)
    }
}

impl Get {
    pub(crate) fn run(&self, target: Target) -> anyhow::Result<ExitCode> {
        let (value, ts) = match target {
            Target::Embedded(db) => {
                let snapshot = self.at.snapshot(&db)?;
                (snapshot.get(&self.key)?, snapshot.ts().to_string())
            }
            Target::Cluster(c) => c.block_on(async {
                let snapshot = self.at.remote(&c).await?;
                anyhow::Ok((snapshot.get(&self.key).await?, snapshot.ts().to_string()))
            })?,
        };
        match value {
            Some(v) => {
                println!("{}", fmt::bytes(&v));
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("{} not found (at {ts})", self.key);
                Ok(ExitCode::from(1))
            }
        }
    }
}

impl Scan {
    pub(crate) fn run(&self, target: Target) -> anyhow::Result<ExitCode> {
        use std::ops::Bound;
        let lo = self.from.as_deref().map_or(Bound::Unbounded, |f| Bound::Included(f.as_bytes()));
        let hi = self.to.as_deref().map_or(Bound::Unbounded, |t| Bound::Excluded(t.as_bytes()));
        let (rows, ts, nanos) = match target {
            Target::Embedded(db) => {
                let snapshot = self.at.snapshot(&db)?;
                let rows = snapshot.scan::<[u8]>((lo, hi), self.limit)?;
                (rows, snapshot.ts().to_string(), snapshot.ts().as_nanos())
            }
            Target::Cluster(c) => c.block_on(async {
                let snapshot = self.at.remote(&c).await?;
                let rows = snapshot.scan::<[u8]>((lo, hi), self.limit).await?;
                anyhow::Ok((rows, snapshot.ts().to_string(), snapshot.ts().as_nanos()))
            })?,
        };
        let mut out = std::io::stdout().lock();
        for (k, v) in &rows {
            writeln!(out, "{}\t{}", fmt::bytes(k), fmt::bytes(v))?;
        }
        eprintln!("{} pairs at {ts} ({nanos})", rows.len());
        Ok(ExitCode::SUCCESS)
    }
}

/// One statement of a `txn` script.
#[derive(Debug, PartialEq)]
enum Statement {
    Get(String),
    Put(String, String),
    Delete(String),
    Scan(Option<String>, Option<String>),
}

/// Splits a script into statements (see [`TxnCmd`] for the grammar).
fn parse_script(script: &str) -> anyhow::Result<Vec<Statement>> {
    let mut statements = Vec::new();
    for (n, raw) in split_statements(script)?.into_iter().enumerate() {
        if raw.is_empty() {
            continue;
        }
        let mut words = raw.into_iter();
        let verb = words.next().unwrap_or_default();
        let args: Vec<String> = words.collect();
        let st = match (verb.as_str(), args.as_slice()) {
            ("get", [k]) => Statement::Get(k.clone()),
            ("put", [k, v]) => Statement::Put(k.clone(), v.clone()),
            ("delete" | "del", [k]) => Statement::Delete(k.clone()),
            ("scan", []) => Statement::Scan(None, None),
            ("scan", [f]) => Statement::Scan(Some(f.clone()), None),
            ("scan", [f, t]) => Statement::Scan(Some(f.clone()), Some(t.clone())),
            (verb, args) => bail!(
                "statement {}: cannot parse `{verb}` with {} argument(s); use get KEY, put KEY VALUE, \
                 delete KEY or scan [FROM [TO]]",
                n + 1,
                args.len()
            ),
        };
        statements.push(st);
    }
    Ok(statements)
}

/// Words per statement: `;` and newlines end statements, double quotes group, `\` escapes.
fn split_statements(script: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut statements = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut chars = script.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => word
                .get_or_insert_with(String::new)
                .push(chars.next().ok_or_else(|| anyhow!("script ends with a backslash"))?),
            '"' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            c if quoted => word.get_or_insert_with(String::new).push(c),
            ';' | '\n' => {
                statements.last_mut().expect("non-empty").extend(word.take());
                statements.push(Vec::new());
            }
            c if c.is_whitespace() => statements.last_mut().expect("non-empty").extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quoted {
        bail!("unterminated quote in the script");
    }
    statements.last_mut().expect("non-empty").extend(word.take());
    Ok(statements)
}

impl TxnCmd {
    pub(crate) fn run(&self, target: Target) -> anyhow::Result<ExitCode> {
        let script = match self.script.as_deref() {
            None | Some("-") => {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).context("reading the script from stdin")?;
                s
            }
            Some(s) => s.to_string(),
        };
        let statements = parse_script(&script)?;
        if statements.is_empty() {
            bail!("the script has no statements");
        }
        // Output is produced inside the closure, which may be retried after a conflict; collect it
        // and print once, from the attempt that committed.
        let (output, info) = match target {
            Target::Embedded(db) => {
                let (output, info) = run_local(&db, &statements)?;
                (output, Committed::local(&info))
            }
            Target::Cluster(c) => {
                let (output, info) = c.block_on(run_remote(&c, &statements))?;
                (output, Committed::remote(&info))
            }
        };
        let mut stdout = std::io::stdout().lock();
        for line in output {
            writeln!(stdout, "{line}")?;
        }
        let writes =
            statements.iter().any(|s| matches!(s, Statement::Put(..) | Statement::Delete(..)));
        print_commit(&mut stdout, if writes { "committed" } else { "read" }, &info)?;
        Ok(ExitCode::SUCCESS)
    }
}

fn bounds<'a>(
    f: &'a Option<String>,
    t: &'a Option<String>,
) -> (std::ops::Bound<&'a [u8]>, std::ops::Bound<&'a [u8]>) {
    use std::ops::Bound;
    (
        f.as_deref().map_or(Bound::Unbounded, |f| Bound::Included(f.as_bytes())),
        t.as_deref().map_or(Bound::Unbounded, |t| Bound::Excluded(t.as_bytes())),
    )
}

fn run_local(
    db: &Db,
    statements: &[Statement],
) -> boundkv::Result<(Vec<String>, boundkv::CommitInfo)> {
    db.transaction(|txn| {
        let mut out = Vec::new();
        for st in statements {
            match st {
                Statement::Get(k) => match txn.get(k)? {
                    Some(v) => out.push(format!("{k} = {}", fmt::bytes(&v))),
                    None => out.push(format!("{k} (not found)")),
                },
                Statement::Put(k, v) => txn.put(k, v)?,
                Statement::Delete(k) => txn.delete(k)?,
                Statement::Scan(f, t) => {
                    for (k, v) in txn.scan::<[u8]>(bounds(f, t), None)? {
                        out.push(format!("{}\t{}", fmt::bytes(&k), fmt::bytes(&v)));
                    }
                }
            }
        }
        Ok(out)
    })
}

async fn run_remote(
    c: &Cluster,
    statements: &[Statement],
) -> boundkv_client::Result<(Vec<String>, boundkv_client::CommitInfo)> {
    c.client
        .transaction(async |txn| {
            let mut out = Vec::new();
            for st in statements {
                match st {
                    Statement::Get(k) => match txn.get(k).await? {
                        Some(v) => out.push(format!("{k} = {}", fmt::bytes(&v))),
                        None => out.push(format!("{k} (not found)")),
                    },
                    Statement::Put(k, v) => txn.put(k, v)?,
                    Statement::Delete(k) => txn.delete(k)?,
                    Statement::Scan(f, t) => {
                        for (k, v) in txn.scan::<[u8]>(bounds(f, t), None).await? {
                            out.push(format!("{}\t{}", fmt::bytes(&k), fmt::bytes(&v)));
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
}

/// `boundkv status`: an embedded database's storage and clock, or a cluster's members, leader,
/// term, indexes and each node's clock.
#[derive(Args, Debug)]
pub(crate) struct Status {}

impl Status {
    pub(crate) fn run(&self, target: Target) -> anyhow::Result<ExitCode> {
        match target {
            Target::Embedded(db) => {
                let s = db.status()?;
                println!("database    {}", s.path.display());
                println!(
                    "storage     {} ({} bytes on disk; durability: {})",
                    s.storage.name, s.storage.size_on_disk, s.storage.durability
                );
                println!("clock       {}", s.clock);
                println!("last commit {}", s.max_commit_ts);
                println!("safe time   {} (reads at or below it never wait)", s.safe_time);
                if s.gc_horizon == Timestamp::ZERO {
                    println!("gc horizon  none yet (every version since creation is kept)");
                } else {
                    println!("gc horizon  {}", s.gc_horizon);
                }
                Ok(ExitCode::SUCCESS)
            }
            Target::Cluster(c) => crate::cmd::cluster::print_status(&c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_parse_with_quotes_escapes_and_separators() {
        let s = parse_script("put a 1; put \"b c\" \"two words\"\nget a;; delete a\nscan; scan a; scan a z; put k \\;").unwrap();
        assert_eq!(
            s,
            vec![
                Statement::Put("a".into(), "1".into()),
                Statement::Put("b c".into(), "two words".into()),
                Statement::Get("a".into()),
                Statement::Delete("a".into()),
                Statement::Scan(None, None),
                Statement::Scan(Some("a".into()), None),
                Statement::Scan(Some("a".into()), Some("z".into())),
                Statement::Put("k".into(), ";".into()),
            ]
        );
        assert!(parse_script("put a").unwrap_err().to_string().contains("statement 1"));
        assert!(parse_script("frobnicate x").is_err());
        assert!(parse_script("put a \"open").is_err());
        assert_eq!(
            parse_script("put a \"\"").unwrap(),
            vec![Statement::Put("a".into(), String::new())]
        );
    }
}
