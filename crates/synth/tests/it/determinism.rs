//! The same settings give byte-identical trees; another seed does not.

use crate::support::{config, generate, tree};

#[test]
fn same_seed_gives_byte_identical_trees_and_another_seed_differs() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate(&config(a.path(), 1000, 3, 7));
    generate(&config(b.path(), 1000, 3, 7));
    generate(&config(c.path(), 1000, 3, 8));
    let (ta, tb, tc) = (tree(a.path()), tree(b.path()), tree(c.path()));
    assert!(
        ta.contains_key("legacy.db")
            && ta.contains_key("_truth/defects.csv")
            && ta.contains_key("2024-12-29/members.csv"),
        "{:?}",
        ta.keys()
    );
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for (path, bytes) in &ta {
        assert!(bytes == &tb[path], "{path} differs between two runs with the same seed");
    }
    assert!(ta["legacy.db"].len() > 10_000, "the SQLite file holds the member table");
    let differing = ta.iter().filter(|(p, bytes)| tc.get(*p) != Some(*bytes)).count();
    assert!(differing >= ta.len() / 2, "another seed changed only {differing} of {} files", ta.len());
}

#[test]
fn long_histories_take_several_passes_and_their_truth_points_at_the_right_rows() {
    // 70 days need two passes over the members (64 day folders are open at
    // once); the defects and labels of the second pass must still point at
    // the rows they describe.
    let dir = tempfile::tempdir().unwrap();
    let summary = generate(&synth::Config { defect_rate: 0.05, ..config(dir.path(), 300, 70, 3) });
    let root = dir.path();
    let days = crate::support::day_folders(root);
    assert_eq!(days.len(), 70);
    assert_eq!(summary.files.keys().filter(|k| k.ends_with("/members.csv")).count(), 70);
    let last_pass: Vec<_> = days[64..].iter().map(|(d, _)| d.to_string()).collect();
    let truth = crate::support::Csv::read(&root.join("_truth/defects.csv"));
    let mut checked = 0;
    for d in &truth.rows {
        let (file, row, kind, key) = (&d[0], d[1].parse::<usize>().unwrap(), &d[2], &d[4]);
        if !last_pass.iter().any(|day| file.starts_with(day.as_str()))
            || !file.ends_with(".csv")
            || kind == "extra_column"
            || kind == "unknown_member"
        {
            continue;
        }
        let csv = crate::support::Csv::read(&root.join(file));
        assert_eq!(&csv.rows[row - 1][0], key, "{file}:{row} is not the row of {key}");
        checked += 1;
    }
    assert!(checked > 20, "only {checked} defects checked in the second pass");
}

#[test]
fn refuses_a_folder_with_other_files_and_replaces_its_own_with_force() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err =
        crate::support::runtime().block_on(synth::generate(&config(dir.path(), 10, 1, 1), &mut |_, _| {})).unwrap_err();
    assert!(err.is_user_error() && err.to_string().contains("not empty"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    generate(&config(dir.path(), 10, 2, 1));
    let again = crate::support::runtime().block_on(synth::generate(&config(dir.path(), 10, 2, 1), &mut |_, _| {}));
    assert!(again.is_err(), "a second generation without --force must not mix files");
    let forced = synth::Config { force: true, days: 1, ..config(dir.path(), 10, 1, 1) };
    generate(&forced);
    assert_eq!(crate::support::day_folders(dir.path()).len(), 1, "the earlier generation's days are gone");
}

#[test]
fn bad_settings_are_refused_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    for (cfg, flag) in [
        (synth::Config { members: 0, ..config(dir.path(), 1, 1, 1) }, "--members"),
        (synth::Config { days: 0, ..config(dir.path(), 1, 1, 1) }, "--days"),
        (synth::Config { defect_rate: 1.5, ..config(dir.path(), 1, 1, 1) }, "--defect-rate"),
        (synth::Config { fraud_rate: -0.1, ..config(dir.path(), 1, 1, 1) }, "--fraud-rate"),
    ] {
        let err = crate::support::runtime().block_on(synth::generate(&cfg, &mut |_, _| {})).unwrap_err();
        assert!(err.is_user_error() && err.to_string().contains(flag), "{err}");
    }
}
