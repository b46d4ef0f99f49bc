//! Authorization decisions beyond "this role may call this route" (those stay with the routes).

use super::DomainError;

/// Whether a token limited to `allowed` models (None: any) may register a device of `model`.
pub fn may_register_model(
    allowed: Option<&[String]>,
    model: Option<&str>,
) -> Result<(), DomainError> {
    match (allowed, model) {
        (None, _) => Ok(()),
        (Some(allowed), Some(m)) if allowed.iter().any(|a| a == m) => Ok(()),
        (Some(allowed), m) => Err(DomainError::forbidden(format!(
            "this token may register models {} only, not {}",
            allowed.join(", "),
            m.map_or_else(
                || "a device without a model".to_string(),
                |m| format!("{m:?}")
            )
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_tokens_are_limited_to_their_models() {
        let thermo = vec!["thermo".to_string()];
        assert!(may_register_model(None, None).is_ok());
        assert!(may_register_model(None, Some("valve")).is_ok());
        assert!(may_register_model(Some(&thermo), Some("thermo")).is_ok());
        assert_eq!(
            may_register_model(Some(&thermo), Some("valve")),
            Err(DomainError::forbidden(
                "this token may register models thermo only, not \"valve\""
            ))
        );
        assert_eq!(
            may_register_model(Some(&thermo), None),
            Err(DomainError::forbidden(
                "this token may register models thermo only, not a device without a model"
            ))
        );
    }
}
