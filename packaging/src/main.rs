//! `pitr-gen DIR`: writes the man pages and shell completions of wal-archiver, basebackup and
//! pitr-restore into DIR (`man/man1/`, `completions/{bash,zsh,fish}/`), from their clap
//! definitions. Used by scripts/package.sh.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: pitr-gen DIR   (writes DIR/man/man1/*.1 and DIR/completions/{{bash,zsh,fish}}/*)");
        return ExitCode::from(2);
    };
    match pitr_packaging::generate(std::path::Path::new(out)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pitr-gen: cannot write into {out}: {e}");
            ExitCode::from(8)
        }
    }
}
