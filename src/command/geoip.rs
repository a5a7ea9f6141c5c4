//! `botpipe geoip <ip>…`: load the configuration, parse the arguments (accepting the zero-padded
//! IPv4 legacy collectors write), and print [`crate::enrich::inspect`]'s report: each database's
//! answer per IP and the merged result botpipe would store.

use std::net::IpAddr;
use std::path::Path;

use crate::cli::GeoipArgs;
use crate::record::NodeIp;

use super::CommandError;

/// `botpipe geoip`.
///
/// # Errors
/// A configuration that does not load or an argument that is not an IP (exit 2), or no
/// database at all (exit 1). A database that fails to open is reported in the output.
pub async fn run(config: Option<&Path>, args: GeoipArgs) -> Result<(), CommandError> {
    let settings = crate::config::load(config)?;
    let ips = args
        .ips
        .iter()
        .map(|s| parse_ip(s).ok_or_else(|| CommandError::BadIp(s.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    // Opening and mapping the databases is blocking file I/O.
    let report = tokio::task::spawn_blocking(move || {
        crate::enrich::inspect(&ips, &settings.geo, &settings.data_dir)
    })
    .await;
    match report {
        Ok(report) => print!("{}", report?),
        Err(e) => println!("geoip report failed: {e}"),
    }
    Ok(())
}

/// An IP as typed, accepting the zero-padded IPv4 legacy collectors write.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse()
        .ok()
        .or_else(|| NodeIp::parse(s).ok().map(NodeIp::addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_parse_like_collectors_write_them() {
        assert_eq!(parse_ip(" 1.2.3.4 "), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(
            parse_ip("014.019.132.125"),
            Some("14.19.132.125".parse().unwrap())
        );
        assert_eq!(parse_ip("::1"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("nope"), None);
    }
}
