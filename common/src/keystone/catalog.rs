//! The service catalog of a Keystone v3 token, and finding an endpoint in it.

use serde::Deserialize;

use super::error::KeystoneError;

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogEntry {
    #[serde(rename = "type")]
    pub service_type: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    pub interface: String,
    pub url: String,
    #[serde(default)]
    pub region_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
}

impl Endpoint {
    fn in_region(&self, region: &str) -> bool {
        self.region_id.as_deref() == Some(region) || self.region.as_deref() == Some(region)
    }
}

/// The URL of the `interface` endpoint of `service_type` (in `region` if given). The
/// interface may be written `internal` or `internalURL`, as in older configuration files.
pub fn find_endpoint(
    catalog: &[CatalogEntry],
    service_type: &str,
    interface: &str,
    region: Option<&str>,
) -> Result<String, KeystoneError> {
    let interface = interface.trim_end_matches("URL");
    catalog
        .iter()
        .filter(|entry| entry.service_type == service_type)
        .flat_map(|entry| &entry.endpoints)
        .find(|e| e.interface == interface && region.is_none_or(|r| e.in_region(r)))
        .map(|e| e.url.trim_end_matches('/').to_string())
        .ok_or_else(|| KeystoneError::NoEndpoint {
            service_type: service_type.to_string(),
            interface: interface.to_string(),
            region: region
                .map(|r| format!(" in region {r}"))
                .unwrap_or_default(),
            option: "--glance-interface/--keystone-region-name, or set --glance-url",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<CatalogEntry> {
        serde_json::from_value(serde_json::json!([
            {"type": "identity", "endpoints": [
                {"interface": "public", "url": "http://ks:5000/v3/", "region_id": "R1"}]},
            {"type": "image", "endpoints": [
                {"interface": "public", "url": "http://g-pub:9292/", "region_id": "R1"},
                {"interface": "internal", "url": "http://g-int:9292", "region_id": "R1"},
                {"interface": "internal", "url": "http://g-r2:9292", "region_id": "R2"}]}
        ]))
        .expect("a catalog")
    }

    #[test]
    fn endpoints_are_found_by_type_interface_and_region() {
        let c = catalog();
        assert_eq!(
            find_endpoint(&c, "image", "public", None).unwrap(),
            "http://g-pub:9292"
        );
        assert_eq!(
            find_endpoint(&c, "image", "internalURL", Some("R2")).unwrap(),
            "http://g-r2:9292"
        );
        assert_eq!(
            find_endpoint(&c, "image", "internal", Some("R1")).unwrap(),
            "http://g-int:9292"
        );
        let err = find_endpoint(&c, "image", "admin", None).unwrap_err();
        assert!(
            err.to_string()
                .contains("no admin endpoint for service type 'image'"),
            "{err}"
        );
        assert!(find_endpoint(&c, "volumev3", "public", None).is_err());
    }
}
