//! `fault-campaign`: runs the fault campaign's scenarios (see `pitr_tests::campaign`) for many
//! rounds and prints the table of figures that `docs/reliability.md` reports; exits 1 if any
//! scenario lost acknowledged data, ended a recovery at a wrong point or broke an exit-code
//! contract. Started by `scripts/fault-campaign.sh`, which starts the S3 test server first.
//!
//! Usage: fault-campaign [--rounds N] [--seed S] [SCENARIO ...]   (default: all scenarios)

use std::time::Instant;

use pitr_tests::campaign::{self, guarded, Figures};
use pitr_tests::repo::TestRepo;

type Scenario = (&'static str, fn(&mut Figures, u32, u64));

const SCENARIOS: &[Scenario] = &[
    ("push-kill-local", |f, n, s| campaign::wal::push_kill(f, &TestRepo::local(), n, s)),
    ("push-kill-s3", |f, n, s| {
        let repo = tokio::runtime::Runtime::new().unwrap().block_on(TestRepo::s3(pitr_tests::s3::moto()));
        campaign::wal::push_kill(f, &repo, n, s)
    }),
    ("push-ahead-kill", |f, n, s| campaign::wal::push_ahead_kill(f, &TestRepo::local(), n, s)),
    ("get-prefetch-kill", |f, n, s| campaign::wal::get_kill(f, &TestRepo::local(), n, s)),
    ("disk-full-push-get", campaign::wal::disk_full),
    ("s3-faults-push-get", campaign::wal::s3_faults),
    ("backup-kill", campaign::backup::backup_kill),
    ("expire-kill", campaign::backup::expire_kill),
    ("restore-kill", campaign::backup::restore_kill),
    ("restore-disk-full", campaign::backup::restore_disk_full),
    ("expire-during-create", campaign::backup::expire_during_create),
    ("parallel-creates", campaign::backup::parallel_creates),
    ("s3-faults-backup-expire-restore", campaign::backup::s3_faults),
    ("receiver-kill-sync-repository", campaign::receiver::receiver_kill),
    ("receiver-spool-full", campaign::receiver::spool_full),
    ("receiver-s3-faults", campaign::receiver::s3_faults),
];

fn main() {
    let mut rounds = 20;
    let mut seed = 1;
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).expect("--seed S"),
            "--list" => {
                for (name, _) in SCENARIOS {
                    println!("{name}");
                }
                return;
            }
            name => only.push(name.to_string()),
        }
    }
    if let Some(unknown) = only.iter().find(|n| !SCENARIOS.iter().any(|(s, _)| s == n)) {
        eprintln!("fault-campaign: unknown scenario {unknown:?} (--list shows them)");
        std::process::exit(2);
    }
    let mut all = Vec::new();
    for (name, run) in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        let t0 = Instant::now();
        eprintln!("fault-campaign: {name} ({rounds} rounds, seed {seed}) ...");
        let f = guarded(name, |f| run(f, rounds, seed));
        eprintln!("fault-campaign: {name}: {} in {:.0} s", f.row(), t0.elapsed().as_secs_f64());
        for n in &f.notes {
            eprintln!("  {n}");
        }
        all.push(f);
    }
    println!("{}", Figures::header());
    for f in &all {
        println!("{}", f.row());
    }
    if all.iter().any(|f| !f.clean()) {
        std::process::exit(1);
    }
}
