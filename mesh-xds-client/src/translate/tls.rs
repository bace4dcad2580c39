//! TLS contexts (gRFC A29), as istiod sends them to proxyless clients: certificates come
//! only from certificate provider instances, named through either the current fields
//! (`tls_certificate_provider_instance`, `ca_certificate_provider_instance`) or the
//! deprecated ones (`tls_certificate_certificate_provider_instance`,
//! `validation_context_certificate_provider_instance`, inside or outside a
//! `combined_validation_context`). Inline certificates, SDS, SPKI/hash pinning, CRLs and
//! custom validators cannot be verified here and reject the resource: a certificate we
//! cannot check is never trusted.

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as pb;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
use envoy_types::pb::google::protobuf::Any;
use mesh_core::cluster::{CertificateInstance, UpstreamTls};
use mesh_core::matcher::StringMatcher;
use prost::{Message, Name};

use super::route::string_matcher;
use crate::resource::FieldError;

/// What a `CommonTlsContext` names.
#[derive(Debug, Default)]
struct CommonTls {
    identity: Option<CertificateInstance>,
    roots: Option<CertificateInstance>,
    sans: Vec<StringMatcher>,
}

/// A server-side TLS context.
#[derive(Debug)]
pub(crate) struct DownstreamTls {
    /// Whether clients must present a certificate (mutual TLS).
    pub require_client_certificate: bool,
    /// The certificate provider instances it names.
    pub providers: Vec<String>,
}

fn decode<M: Message + Name + Default>(any: &Any) -> Result<M, FieldError> {
    if any.type_url != M::type_url() {
        return Err(FieldError::new(
            "",
            format!("type {} is not {}", any.type_url, M::full_name()),
        ));
    }
    M::decode(any.value.as_slice()).map_err(|e| FieldError::new("", format!("cannot decode: {e}")))
}

/// A cluster's `UpstreamTlsContext` (field paths from the `typed_config`). The roots are
/// required: without them the server cannot be verified.
pub(crate) fn upstream_tls(any: &Any) -> Result<UpstreamTls, FieldError> {
    let ctx: pb::UpstreamTlsContext = decode(any)?;
    let common = ctx
        .common_tls_context
        .as_ref()
        .ok_or_else(|| FieldError::new("common_tls_context", "missing"))?;
    let parts = common_tls(common).map_err(|e| e.under("common_tls_context"))?;
    if parts.roots.is_none() {
        return Err(FieldError::new(
            "common_tls_context",
            "no root certificate provider: the server could not be verified",
        ));
    }
    Ok(UpstreamTls {
        sni: Some(ctx.sni).filter(|s| !s.is_empty()),
        accepted_sans: parts.sans,
        identity: parts.identity,
        roots: parts.roots,
    })
}

/// A filter chain's `DownstreamTlsContext` (field paths from the `typed_config`).
pub(crate) fn downstream_tls(any: &Any) -> Result<DownstreamTls, FieldError> {
    let ctx: pb::DownstreamTlsContext = decode(any)?;
    let common = ctx
        .common_tls_context
        .as_ref()
        .ok_or_else(|| FieldError::new("common_tls_context", "missing"))?;
    let parts = common_tls(common).map_err(|e| e.under("common_tls_context"))?;
    let require = ctx.require_client_certificate.is_some_and(|b| b.value);
    if parts.identity.is_none() {
        return Err(FieldError::new(
            "common_tls_context",
            "no identity certificate provider",
        ));
    }
    if require && parts.roots.is_none() {
        return Err(FieldError::new(
            "require_client_certificate",
            "client certificates required but no root certificate provider to verify them",
        ));
    }
    if ctx.require_sni.is_some_and(|b| b.value) {
        return Err(FieldError::new("require_sni", "not supported"));
    }
    let providers = [parts.identity, parts.roots]
        .into_iter()
        .flatten()
        .map(|i| i.instance_name)
        .collect();
    Ok(DownstreamTls {
        require_client_certificate: require,
        providers,
    })
}

#[allow(deprecated)] // the deprecated provider fields are what older istiod sends
fn common_tls(c: &pb::CommonTlsContext) -> Result<CommonTls, FieldError> {
    if !c.tls_certificates.is_empty() {
        return Err(FieldError::new(
            "tls_certificates",
            "inline certificates are not supported",
        ));
    }
    if !c.tls_certificate_sds_secret_configs.is_empty() {
        return Err(FieldError::new(
            "tls_certificate_sds_secret_configs",
            "SDS is not supported",
        ));
    }
    if c.tls_certificate_certificate_provider.is_some() {
        return Err(FieldError::new(
            "tls_certificate_certificate_provider",
            "not supported; use a provider instance",
        ));
    }
    if c.custom_handshaker.is_some() {
        return Err(FieldError::new("custom_handshaker", "not supported"));
    }
    if c.custom_tls_certificate_selector.is_some() {
        return Err(FieldError::new(
            "custom_tls_certificate_selector",
            "not supported",
        ));
    }
    let mut out = CommonTls {
        identity: match (
            &c.tls_certificate_provider_instance,
            &c.tls_certificate_certificate_provider_instance,
        ) {
            (Some(i), _) => Some(CertificateInstance::new(
                &i.instance_name,
                &i.certificate_name,
            )),
            (None, Some(i)) => Some(CertificateInstance::new(
                &i.instance_name,
                &i.certificate_name,
            )),
            (None, None) => None,
        },
        ..CommonTls::default()
    };
    match &c.validation_context_type {
        None => {}
        Some(ValidationContextType::ValidationContext(v)) => {
            validation_context(v, &mut out).map_err(|e| e.under("validation_context"))?;
        }
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            let at = "combined_validation_context";
            if combined.validation_context_sds_secret_config.is_some() {
                return Err(FieldError::new(
                    format!("{at}.validation_context_sds_secret_config"),
                    "SDS is not supported",
                ));
            }
            if combined.validation_context_certificate_provider.is_some() {
                return Err(FieldError::new(
                    format!("{at}.validation_context_certificate_provider"),
                    "not supported; use a provider instance",
                ));
            }
            if let Some(v) = &combined.default_validation_context {
                validation_context(v, &mut out)
                    .map_err(|e| e.under(&format!("{at}.default_validation_context")))?;
            }
            if out.roots.is_none() {
                out.roots = combined
                    .validation_context_certificate_provider_instance
                    .as_ref()
                    .map(|i| CertificateInstance::new(&i.instance_name, &i.certificate_name));
            }
        }
        Some(ValidationContextType::ValidationContextCertificateProviderInstance(i)) => {
            out.roots = Some(CertificateInstance::new(
                &i.instance_name,
                &i.certificate_name,
            ));
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(_)) => {
            return Err(FieldError::new(
                "validation_context_sds_secret_config",
                "SDS is not supported",
            ))
        }
        Some(ValidationContextType::ValidationContextCertificateProvider(_)) => {
            return Err(FieldError::new(
                "validation_context_certificate_provider",
                "not supported; use a provider instance",
            ))
        }
    }
    Ok(out)
}

#[allow(deprecated)] // `match_subject_alt_names` is what istiod sends
fn validation_context(
    v: &pb::CertificateValidationContext,
    out: &mut CommonTls,
) -> Result<(), FieldError> {
    let refuse =
        |field: &str, what: &str| Err(FieldError::new(field, format!("{what} is not supported")));
    if v.trusted_ca.is_some() {
        return refuse("trusted_ca", "an inline or file CA");
    }
    if v.system_root_certs.is_some() {
        return refuse("system_root_certs", "the system trust store");
    }
    if !v.verify_certificate_spki.is_empty() {
        return refuse("verify_certificate_spki", "SPKI pinning");
    }
    if !v.verify_certificate_hash.is_empty() {
        return refuse("verify_certificate_hash", "certificate hash pinning");
    }
    if v.require_signed_certificate_timestamp
        .is_some_and(|b| b.value)
    {
        return refuse(
            "require_signed_certificate_timestamp",
            "certificate transparency",
        );
    }
    if v.crl.is_some() {
        return refuse("crl", "a CRL");
    }
    if v.custom_validator_config.is_some() {
        return refuse("custom_validator_config", "a custom validator");
    }
    if let Some(i) = &v.ca_certificate_provider_instance {
        out.roots = Some(CertificateInstance::new(
            &i.instance_name,
            &i.certificate_name,
        ));
    }
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        out.sans.push(
            string_matcher(m).map_err(|e| e.under(&format!("match_subject_alt_names[{i}]")))?,
        );
    }
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let at = format!("match_typed_subject_alt_names[{i}]");
        if SanType::try_from(m.san_type) != Ok(SanType::Uri) {
            // Identities are SPIFFE URIs; matching another SAN type is not possible here.
            return Err(FieldError::new(
                format!("{at}.san_type"),
                "only URI SAN matchers are supported",
            ));
        }
        let matcher = m
            .matcher
            .as_ref()
            .ok_or_else(|| FieldError::new(format!("{at}.matcher"), "missing"))?;
        out.sans
            .push(string_matcher(matcher).map_err(|e| e.under(&format!("{at}.matcher")))?);
    }
    Ok(())
}
