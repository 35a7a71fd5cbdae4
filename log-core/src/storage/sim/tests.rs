//! The simulated disk's own promises: synced data and directory entries
//! survive a restart and unsynced ones may not, a crash stops every later
//! call, and injected faults fail the chosen operation once.

use super::*;

fn read(storage: &SimStorage, path: &str) -> Vec<u8> {
    let f = storage.open(Path::new(path), false).unwrap();
    let mut buf = vec![0; f.len().unwrap() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn synced_data_survives_and_unsynced_may_not() {
    let disk = SimStorage::new(1);
    disk.create_dir_all(Path::new("/d")).unwrap();
    disk.sync_dir(Path::new("/")).unwrap();
    let f = disk.open(Path::new("/d/a"), true).unwrap();
    disk.sync_dir(Path::new("/d")).unwrap();
    f.write_all_at(b"durable", 0).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(b"-lost?", 7).unwrap();
    disk.restart();
    let data = read(&disk, "/d/a");
    assert!(data.starts_with(b"durable"));
    assert!(b"durable-lost?".starts_with(&data));
    assert!(f.len().is_err(), "handles from before the crash are dead");
}

#[test]
fn unsynced_creation_and_rename_are_lost() {
    let disk = SimStorage::new(2);
    disk.create_dir_all(Path::new("/d")).unwrap();
    disk.sync_dir(Path::new("/")).unwrap();
    let f = disk.open(Path::new("/d/a"), true).unwrap();
    f.sync_data().unwrap();
    disk.sync_dir(Path::new("/d")).unwrap();
    disk.rename(Path::new("/d/a"), Path::new("/d/b")).unwrap();
    disk.open(Path::new("/d/c"), true).unwrap();
    disk.restart();
    assert_eq!(disk.files(), vec![PathBuf::from("/d/a")]);
}

#[test]
fn crash_point_stops_every_later_call() {
    let disk = SimStorage::new(3);
    disk.create_dir_all(Path::new("/d")).unwrap();
    let f = disk.open(Path::new("/d/a"), true).unwrap();
    disk.crash_after(1);
    f.write_all_at(b"x", 0).unwrap();
    assert!(f.write_all_at(b"y", 1).is_err());
    assert!(disk.has_crashed());
    assert!(f.read_at(&mut [0], 0).is_err());
}

#[test]
fn injected_faults_fail_the_chosen_operation_once() {
    let disk = SimStorage::new(4);
    disk.create_dir_all(Path::new("/d")).unwrap();
    let f = disk.open(Path::new("/d/a.log"), true).unwrap();
    disk.inject_fault(FaultOp::SyncData, ".log", 1);
    assert!(f.sync_data().is_err());
    assert!(f.sync_data().is_ok());
}
