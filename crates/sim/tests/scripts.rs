//! Runs every golden script in `testscripts/replica/` (one test each) with
//! [`boundkv_sim::script::Runner`]. Each script runs twice: the second run must print exactly
//! what the first did (the cluster is deterministic), and the first must match the file's
//! expected output. `UPDATE_GOLDENFILES=1 cargo test -p boundkv-sim --test scripts` rewrites the
//! expected outputs; read every change before committing it.

use std::path::Path;

use boundkv_sim::script::Runner;
use test_each_file::test_each_path;

test_each_path! { in "crates/sim/testscripts/replica" as replica => run_script }

fn run_script(path: &Path) {
    goldenscript::run(&mut Runner::new(), path).expect("the script runs");
    let input = std::fs::read_to_string(path).expect("the script");
    let again = goldenscript::generate(&mut Runner::new(), &input).expect("the script runs again");
    assert_eq!(again, input, "a second run printed something else: the run is not deterministic");
}
