//! `convert-tokenizer VOCAB.gguf OUT/tokenizer.json`: used by scripts/setup-tokenizer.sh.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: convert-tokenizer VOCAB.gguf tokenizer.json");
        std::process::exit(2);
    }
    match vela_vla::tokenizer::convert_gguf_vocab(args[1].as_ref(), args[2].as_ref()) {
        Ok(n) => println!("{n} merges"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
