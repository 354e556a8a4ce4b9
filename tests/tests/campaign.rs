//! The fault campaign in the test suite: every scenario of `pitr_tests::campaign` for a few
//! rounds (`scripts/fault-campaign.sh` runs them for many). Each must lose no acknowledged
//! data, end no recovery at a wrong point and break no exit-code contract.

use pitr_tests::campaign::{self, guarded, Figures};
use pitr_tests::repo::TestRepo;

const ROUNDS: u32 = 3;

fn check(f: Figures) {
    assert!(f.faults > 0, "{}: no fault was injected", f.scenario);
    assert!(f.clean(), "{}\n{}", f.row(), f.notes.join("\n"));
}

#[test]
fn push_killed() {
    check(guarded("push-kill", |f| campaign::wal::push_kill(f, &TestRepo::local(), ROUNDS * 2, 11)));
}

#[test]
fn push_ahead_worker_killed() {
    check(guarded("push-ahead-kill", |f| campaign::wal::push_ahead_kill(f, &TestRepo::local(), ROUNDS, 12)));
}

#[test]
fn get_and_prefetch_killed() {
    check(guarded("get-kill", |f| campaign::wal::get_kill(f, &TestRepo::local(), ROUNDS, 13)));
}

#[test]
fn repository_disk_full() {
    check(guarded("disk-full", |f| campaign::wal::disk_full(f, ROUNDS, 14)));
}

#[test]
fn s3_faults_push_get() {
    check(guarded("s3-faults-wal", |f| campaign::wal::s3_faults(f, ROUNDS, 15)));
}

#[test]
fn backup_killed() {
    check(guarded("backup-kill", |f| campaign::backup::backup_kill(f, ROUNDS, 16)));
}

#[test]
fn expire_killed() {
    check(guarded("expire-kill", |f| campaign::backup::expire_kill(f, ROUNDS, 17)));
}

#[test]
fn restore_killed() {
    check(guarded("restore-kill", |f| campaign::backup::restore_kill(f, 2, 18)));
}

#[test]
fn restore_target_disk_full() {
    check(guarded("restore-disk-full", |f| campaign::backup::restore_disk_full(f, 2, 22)));
}

#[test]
fn expire_during_create() {
    check(guarded("expire-during-create", |f| campaign::backup::expire_during_create(f, 2, 19)));
}

#[test]
fn s3_faults_backup_expire_restore() {
    check(guarded("s3-faults-backup", |f| campaign::backup::s3_faults(f, 2, 20)));
}

#[test]
fn receiver_killed() {
    check(guarded("receiver-kill", |f| campaign::receiver::receiver_kill(f, ROUNDS, 21)));
}

#[test]
fn receiver_spool_full() {
    check(guarded("receiver-spool-full", |f| campaign::receiver::spool_full(f, ROUNDS, 23)));
}

#[test]
fn receiver_s3_faults() {
    check(guarded("receiver-s3-faults", |f| campaign::receiver::s3_faults(f, 6, 24)));
}
