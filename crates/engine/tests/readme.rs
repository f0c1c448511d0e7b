//! The README's example is the example CI builds and runs, character for character.

#[test]
fn the_readmes_example_is_examples_incremental_rs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let example = std::fs::read_to_string(dir.join("examples/incremental.rs")).unwrap();
    let block = readme
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```rust block");
    assert_eq!(
        block, example,
        "README.md's example differs from examples/incremental.rs: copy the file into it"
    );
}
