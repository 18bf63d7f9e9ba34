//! The smallest complete async upload: `upload_async FILE [MESSAGE_ID]`.
//!
//! Reads the Graph base URL from `UPSESSION_BASE_URL` (Microsoft Graph v1.0 when
//! unset) and the token from `UPSESSION_TOKEN`; without a message id it makes a
//! new draft. Prints the attachment's location and the upload's speed. `cargo
//! xtask bench` measures this program's size and speed beside `upload_blocking`.

use std::process::ExitCode;
use std::time::Instant;

use upsession_client_reqwest::{Client, Error, Target, UploadOptions};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upload_async: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let file = args
        .next()
        .ok_or_else(|| Error::InvalidInput("usage: upload_async FILE [MESSAGE_ID]".into()))?;
    let mut builder = Client::builder().token(std::env::var("UPSESSION_TOKEN").unwrap_or_default());
    if let Ok(base) = std::env::var("UPSESSION_BASE_URL") {
        builder = builder.base_url(base);
    }
    let client = builder.build()?;
    let message = match args.next() {
        Some(id) => Target::message(id),
        None => client.create_draft("upload_async").await?,
    };
    let started = Instant::now();
    let done = client
        .upload_file(&message, &file, UploadOptions::new())
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)] // a figure for people to read
    let mib_s = done.size as f64 / seconds / f64::from(1 << 20);
    println!(
        "{} bytes in {seconds:.3} s ({mib_s:.1} MiB/s): {}",
        done.size,
        done.location.unwrap_or_default()
    );
    Ok(())
}
