//! Built-in kinds through the runner: declared params, child process, caching.

mod common;

use common::Ws;

#[test]
fn download_cifar_from_a_local_mirror_is_cached() {
    let ws = Ws::new();
    ws.pipeline(&format!(
        "[pipeline]\nname = \"d\"\n[stages.data]\nkind = \"download-cifar\"\nparams = {{ mirror = \"{}\" }}\nouts = [\"data/cifar10\"]\n",
        common::cifar_dir_str()
    ));
    ws.run(&["run", "p.toml"]).ok();
    for f in ["data_batch_1.bin", "data_batch_5.bin", "test_batch.bin"] {
        assert_eq!(
            std::fs::metadata(ws.path().join("data/cifar10/cifar-10-batches-bin").join(f))
                .unwrap()
                .len(),
            30_730_000
        );
    }
    ws.run(&["logs", "data"])
        .ok()
        .stdout_has("CIFAR-10 verified: 6 files");
    assert_eq!(ws.run(&["run", "p.toml"]).ok().counts(), (0, 1, 0));
    ws.run(&["dag", "p.toml"])
        .ok()
        .stdout_has("kind: download-cifar v1");
}

#[test]
fn builtin_params_are_declared() {
    let ws = Ws::new();
    ws.pipeline("[pipeline]\nname = \"d\"\n[stages.data]\nkind = \"download-cifar\"\nparams = { mirorr = \"x\" }\nouts = [\"d\"]\n");
    let o = ws.run(&["run", "p.toml"]);
    o.code(2)
        .stderr_has("unknown parameter `mirorr` for kind `download-cifar`")
        .stderr_has("did you mean `mirror`?")
        .stderr_has("p.toml:5:12");
    ws.pipeline("[pipeline]\nname = \"d\"\n[stages.data]\nkind = \"download-cifr\"\n");
    ws.run(&["run", "p.toml"])
        .code(2)
        .stderr_has("did you mean `download-cifar`?");
}

#[test]
fn a_bad_mirror_fails_the_stage_and_caches_nothing() {
    let ws = Ws::new();
    ws.file("empty/readme", "no data here");
    ws.pipeline("[pipeline]\nname = \"d\"\n[stages.data]\nkind = \"download-cifar\"\nparams = { mirror = \"empty\" }\nouts = [\"data\"]\n");
    ws.run(&["run", "p.toml"])
        .code(1)
        .stderr_has("stage `data` exited with status 1");
    assert!(!ws.exists("data"));
}

/// The child side of the stage protocol never falls back to defaults: a built-in stage
/// whose params file is gone (or whose environment is missing) stops with exit 2 and says
/// what is missing, before it trains or writes anything.
#[test]
fn a_built_in_stage_without_its_params_file_stops_and_says_so() {
    let ws = Ws::new();
    std::fs::create_dir(ws.path().join("scratch")).unwrap();
    let params = ws.path().join("params.json");
    let stage = |with_env: bool| {
        let mut c = ws.command(&["__stage", "train"]);
        if with_env {
            c.env("INCRPIPE_STAGE", "run@seed=1/train")
                .env("INCRPIPE_KEY", "0123abcd")
                .env("INCRPIPE_PARAMS", &params)
                .env("INCRPIPE_SCRATCH", ws.path().join("scratch"))
                .env("INCRPIPE_ATTEMPT", "1")
                .env("INCRPIPE_CPUS", "1");
        } else {
            for v in ["INCRPIPE_STAGE", "INCRPIPE_KEY", "INCRPIPE_PARAMS"] {
                c.env_remove(v);
            }
        }
        let o = c.output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = stage(true);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot read the params file") && err.contains(&*params.to_string_lossy()),
        "{err}"
    );
    // A params file without its params is malformed, not "all defaults".
    std::fs::write(
        &params,
        r#"{"stage": "run@seed=1/train", "deps": [], "outs": []}"#,
    )
    .unwrap();
    let (code, err) = stage(true);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("is malformed") && err.contains("params"),
        "{err}"
    );
    let (code, err) = stage(false);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("$INCRPIPE_STAGE is not set"), "{err}");
    let left: Vec<_> = std::fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left.len(),
        2,
        "nothing but scratch/ and params.json: {left:?}"
    );
}
