//! `kpl stream create|describe|split|delete`.

use kpl_aggregation::HashKey;

use crate::cli::StreamCommand;
use crate::target::Target;
use crate::{Failure, Outcome};

pub(crate) async fn run(command: StreamCommand) -> Result<Outcome, Failure> {
    match command {
        StreamCommand::Create { target, shards } => {
            let service = Target::open(&target).await?;
            service.create_stream(&target.stream, shards).await?;
            service.save()?;
            crate::say(&format!(
                "created stream {} with {shards} shards at {}\n",
                target.stream,
                service.place()
            ));
        }
        StreamCommand::Describe { target } => {
            let service = Target::open(&target).await?;
            let shards = service.shards(&target.stream).await?;
            let open = shards.iter().filter(|shard| shard.open).count();
            crate::say(&format!(
                "stream {} at {}: {open} open shards, {} closed\n",
                target.stream,
                service.place(),
                shards.len() - open
            ));
            for shard in shards {
                let parents: Vec<&str> = shard.parents.iter().map(|p| p.as_str()).collect();
                crate::say(&format!(
                    "{}\t{}\thash keys {}..={}{}\n",
                    shard.id,
                    if shard.open { "open" } else { "closed" },
                    shard.range.start().get(),
                    shard.range.end().get(),
                    if parents.is_empty() {
                        String::new()
                    } else {
                        format!("\tfrom {}", parents.join(" + "))
                    }
                ));
            }
        }
        StreamCommand::Split { target, shard, at } => {
            let at = at
                .map(|text| {
                    HashKey::parse_decimal(&text)
                        .map_err(|error| Failure::bad_input(format!("--at {text}: {error}")))
                })
                .transpose()?;
            let service = Target::open(&target).await?;
            service.split_shard(&target.stream, &shard, at).await?;
            service.save()?;
            crate::say(&format!("split {shard} of stream {}\n", target.stream));
        }
        StreamCommand::Delete { target } => {
            let service = Target::open(&target).await?;
            service.delete_stream(&target.stream).await?;
            service.save()?;
            crate::say(&format!(
                "deleted stream {} at {}\n",
                target.stream,
                service.place()
            ));
        }
    }
    Ok(Outcome::Done)
}
