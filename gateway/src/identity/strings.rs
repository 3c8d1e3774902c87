//! Every string the hosted login pages show, in one place: a translation is another [`Strings`]
//! value (and a match arm in [`Strings::for_language`]). The pages escape all of them.

/// The text of the hosted login pages, in one language.
#[derive(Debug)]
pub struct Strings {
    /// The `lang` attribute of the pages.
    pub lang: &'static str,
    pub sign_in_title: &'static str,
    pub sign_in_to: &'static str,
    pub email: &'static str,
    pub password: &'static str,
    pub sign_in: &'static str,
    pub sign_in_and_allow: &'static str,
    pub cancel: &'static str,
    pub consent_intro: &'static str,
    pub wrong_credentials: &'static str,
    pub locked: &'static str,
    pub mfa_title: &'static str,
    pub mfa_intro: &'static str,
    pub code: &'static str,
    pub code_hint: &'static str,
    pub verify: &'static str,
    pub wrong_code: &'static str,
    pub enrol_title: &'static str,
    pub enrol_intro: &'static str,
    pub enrol_secret: &'static str,
    pub enrol_uri: &'static str,
    pub enrol_confirm: &'static str,
    pub backup_title: &'static str,
    pub backup_intro: &'static str,
    pub continue_to: &'static str,
    pub suspended_title: &'static str,
    pub suspended_intro: &'static str,
    pub suspended_reason: &'static str,
    pub appeal_title: &'static str,
    pub appeal_intro: &'static str,
    pub appeal_statement: &'static str,
    pub appeal_send: &'static str,
    pub appeal_filed: &'static str,
    pub appeal_open: &'static str,
    pub error_title: &'static str,
    pub error_intro: &'static str,
    pub unavailable: &'static str,
    pub session_expired: &'static str,
    pub logged_out_title: &'static str,
    pub logged_out: &'static str,
    pub passkey_sign_in: &'static str,
    pub passkey_second_factor: &'static str,
    pub passkey_failed: &'static str,
    pub passkey_rejected: &'static str,
    pub scope_openid: &'static str,
    pub scope_profile: &'static str,
    pub scope_email: &'static str,
    pub scope_offline_access: &'static str,
}

/// English.
pub const EN: Strings = Strings {
    lang: "en",
    sign_in_title: "Sign in",
    sign_in_to: "Sign in to continue to",
    email: "Email address",
    password: "Password",
    sign_in: "Sign in",
    sign_in_and_allow: "Sign in and allow",
    cancel: "Cancel",
    consent_intro: "If you sign in, this application will be allowed to:",
    wrong_credentials: "The email address or the password is wrong.",
    locked: "Too many failed attempts. Wait a few minutes, then try again.",
    mfa_title: "Second factor",
    mfa_intro: "Enter the six-digit code from your authenticator app, or one of your backup codes.",
    code: "Code",
    code_hint: "Six digits, or a backup code",
    verify: "Verify",
    wrong_code: "That code is wrong or was used already.",
    enrol_title: "Set up a second factor",
    enrol_intro: "Your role requires a second factor. Add this account to an authenticator app, then enter the code it shows.",
    enrol_secret: "Secret for manual entry",
    enrol_uri: "Link for authenticator apps",
    enrol_confirm: "Confirm",
    backup_title: "Your backup codes",
    backup_intro: "Keep these codes somewhere safe. Each one signs you in once if you lose your authenticator. They are shown only now.",
    continue_to: "Continue to",
    suspended_title: "Account suspended",
    suspended_intro: "Your account is suspended, so you cannot sign in.",
    suspended_reason: "Reason given",
    appeal_title: "Appeal",
    appeal_intro: "If you think this is a mistake, explain why. Enter your password again to send the appeal.",
    appeal_statement: "Your statement",
    appeal_send: "Send appeal",
    appeal_filed: "Your appeal was sent. You will be told the decision when you next try to sign in.",
    appeal_open: "An appeal of yours is already waiting for a decision.",
    error_title: "This sign-in request cannot be used",
    error_intro: "The application that sent you here made a request that cannot be answered. Go back to it and try again.",
    unavailable: "Sign-in is unavailable for a moment. Please try again shortly.",
    session_expired: "This page has expired. Please go back to the application and sign in again.",
    logged_out_title: "Signed out",
    logged_out: "You are signed out.",
    passkey_sign_in: "Sign in with a passkey",
    passkey_second_factor: "Use a passkey instead",
    passkey_failed: "The passkey could not be used. Try again, or use another way to sign in.",
    passkey_rejected: "That passkey was not accepted.",
    scope_openid: "know who you are",
    scope_profile: "see your name",
    scope_email: "see your email address",
    scope_offline_access: "stay signed in when you are not using it",
};

impl Strings {
    /// The strings for the first language of an `Accept-Language` header that has them (English
    /// is the only one so far, and the fallback).
    pub fn for_language(_accept_language: Option<&str>) -> &'static Strings {
        &EN
    }

    /// What a scope lets an application do, as the consent list says it.
    pub fn scope(&self, scope: &str) -> &'static str {
        match scope {
            "profile" => self.scope_profile,
            "email" => self.scope_email,
            "offline_access" => self.scope_offline_access,
            _ => self.scope_openid,
        }
    }
}
