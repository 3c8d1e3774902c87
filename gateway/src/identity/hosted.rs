//! The hosted login page of each tenant's OpenID Connect provider (docs/identity.md):
//! `GET /t/<slug>/oauth/authorize` checks the client's authorization request and shows the sign-in
//! form; each step posts back to the same address (password, then a TOTP or backup code, or TOTP
//! enrolment when the user's role requires a second factor), through the same auth-svc calls as
//! the API login, so each step is audited and throttled as that is. A signed-in user's code is
//! sent to the client's redirect URI; the short session the page signed in with ends at once.
//! A suspended user is told the reason and may appeal. `GET /t/<slug>/oauth/logout` is
//! RP-initiated logout.
//!
//! The pages are server-rendered (askama, escaped), carry no script, and keep a strict CSP: styles
//! from the gateway's own stylesheet only, forms posting only to the page itself and (its redirect
//! after the post) the client's redirect URI. A form is accepted only from the gateway's own
//! origin (`Sec-Fetch-Site`/`Origin`) and with the token bound to the page's `__Host-` cookie.
//! Every string shown is in [`super::strings`].

use std::net::SocketAddr;

use askama::Template;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kit::ApiError;
use proto::auth::v1 as pb;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::login::{anonymous, client_info, recorded_in};
use super::strings::Strings;
use super::{authn, oauth_flow};
use crate::AppState;
use crate::http_layer::RequestId;
use crate::input::PathParams;
use crate::upstream::upstream;

/// The page's form cookie: a random nonce the form's token is bound to.
const FORM_COOKIE: &str = "__Host-strongroom_authorize";
/// The refresh token of a session that may only enrol TOTP, between the enrolment's two steps.
const ENROL_COOKIE: &str = "__Host-strongroom_enrol";
/// The stylesheet of the pages.
pub const STYLESHEET: &str = include_str!("../../assets/hosted.css");
/// The script of the pages (the passkey buttons; the pages work without it).
pub const SCRIPT: &str = include_str!("../../assets/hosted.js");

/// The parameters of an authorization request (OpenID Connect Core 3.1.2.1), from the query or,
/// carried along, from the form.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct AuthzParams {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    code_challenge: String,
    #[serde(default)]
    code_challenge_method: String,
    /// `none` is answered `login_required` (the page keeps no session of its own).
    #[serde(default)]
    prompt: String,
    /// Fills in the email field.
    #[serde(default)]
    login_hint: String,
}

impl AuthzParams {
    fn request(&self, consent_given: bool) -> pb::AuthorizeRequest {
        pb::AuthorizeRequest {
            client_id: self.client_id.clone(),
            redirect_uri: self.redirect_uri.clone(),
            response_type: self.response_type.clone(),
            scope: self.scope.clone(),
            state: self.state.clone(),
            nonce: self.nonce.clone(),
            code_challenge: self.code_challenge.clone(),
            code_challenge_method: self.code_challenge_method.clone(),
            consent_given,
        }
    }

    /// The parameters each form carries along, as hidden fields.
    fn hidden(&self) -> Vec<(&'static str, String)> {
        [
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("response_type", &self.response_type),
            ("scope", &self.scope),
            ("state", &self.state),
            ("nonce", &self.nonce),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.clone()))
        .collect()
    }
}

/// A posted step: the request carried along, the form's token, and the step's fields.
#[derive(Deserialize)]
struct StepForm {
    #[serde(flatten)]
    params: AuthzParams,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    email: String,
    #[serde(default = "no_secret")]
    password: SecretString,
    #[serde(default = "no_secret")]
    code: SecretString,
    #[serde(default = "no_secret")]
    mfa_token: SecretString,
    #[serde(default)]
    enrol_secret: String,
    #[serde(default)]
    enrol_uri: String,
    #[serde(default)]
    statement: String,
    /// A passkey's answer (the page's script): its ceremony and `PublicKeyCredential` JSON.
    #[serde(default)]
    ceremony_id: String,
    #[serde(default)]
    credential: String,
    /// The MFA page offered a passkey.
    #[serde(default)]
    passkey_offered: String,
}

fn no_secret() -> SecretString {
    SecretString::from("")
}

/// What every page of a request shows and carries.
struct Frame {
    t: &'static Strings,
    tenant: String,
    /// Where its forms post.
    action: String,
    csrf: String,
    hidden: Vec<(&'static str, String)>,
}

#[derive(Template)]
#[template(path = "hosted/login.html")]
struct LoginPage<'a> {
    f: &'a Frame,
    client_name: &'a str,
    consent: Vec<&'static str>,
    email: &'a str,
    error: &'a str,
}

#[derive(Template)]
#[template(path = "hosted/mfa.html")]
struct MfaPage<'a> {
    f: &'a Frame,
    mfa_token: &'a str,
    error: &'a str,
    /// The user has a passkey: offer it.
    passkey: bool,
}

#[derive(Template)]
#[template(path = "hosted/enrol.html")]
struct EnrolPage<'a> {
    f: &'a Frame,
    secret: &'a str,
    uri: &'a str,
    error: &'a str,
}

#[derive(Template)]
#[template(path = "hosted/backup.html")]
struct BackupPage<'a> {
    f: &'a Frame,
    codes: &'a [String],
    client_name: &'a str,
    redirect_to: &'a str,
}

#[derive(Template)]
#[template(path = "hosted/suspended.html")]
struct SuspendedPage<'a> {
    f: &'a Frame,
    reason: &'a str,
    email: &'a str,
    notice: &'a str,
    error: &'a str,
    appeal_form: bool,
}

#[derive(Template)]
#[template(path = "hosted/message.html")]
struct MessagePage<'a> {
    f: &'a Frame,
    title: &'a str,
    message: &'a str,
    detail: &'a str,
}

/// The CSP of a page whose forms post to itself and may be redirected to `redirect_uri`'s origin
/// (browsers check `form-action` on the redirect after a post too).
fn csp(redirect_uri: Option<&str>) -> String {
    let target = redirect_uri.and_then(|u| url::Url::parse(u).ok()).map(|u| match u.scheme() {
        "https" | "http" => u.origin().ascii_serialization(),
        scheme => format!("{scheme}:"),
    });
    let form_action = match target {
        Some(t) => format!("'self' {t}"),
        None => "'self'".to_owned(),
    };
    format!(
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; \
         form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// An HTML answer with its CSP and cookies.
fn html(status: StatusCode, page: Result<String, askama::Error>, csp: &str, cookies: &[String]) -> Response {
    let body = match page {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "a hosted page did not render");
            return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
        }
    };
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            headers.append(header::SET_COOKIE, v);
        }
    }
    resp
}

fn cookie_value(name: &str, value: &str, max_age: u32) -> String {
    format!("{name}={value}; Max-Age={max_age}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// The message page (an error the user cannot fix here, or the end of a logout).
fn message(t: &'static Strings, status: StatusCode, title: &str, text: &str, detail: &str) -> Response {
    let f = Frame { t, tenant: String::new(), action: String::new(), csrf: String::new(), hidden: Vec::new() };
    let page = MessagePage { f: &f, title, message: text, detail };
    html(status, page.render(), &csp(None), &[])
}

fn unavailable(t: &'static Strings) -> Response {
    message(t, StatusCode::SERVICE_UNAVAILABLE, t.error_title, t.unavailable, "")
}

fn accept_language(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok())
}

/// A 303 to `uri`.
fn see_other(uri: &str) -> Response {
    match HeaderValue::from_str(uri) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
    }
}

/// The tenant's issuer (RFC 9207's `iss` on every answer to the redirect URI).
fn issuer(state: &AppState, tenant: &str) -> String {
    format!("{}/t/{tenant}", state.issuer.trim_end_matches('/'))
}

/// Sends an error back to the client's (checked) redirect URI.
fn back_with_error(state: &AppState, tenant: &str, params: &AuthzParams, error: &str, description: &str) -> Response {
    let Ok(mut url) = url::Url::parse(&params.redirect_uri) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("error", error);
        if !description.is_empty() {
            q.append_pair("error_description", description);
        }
        if !params.state.is_empty() {
            q.append_pair("state", &params.state);
        }
        q.append_pair("iss", &issuer(state, tenant));
    }
    see_other(url.as_str())
}

/// What a checked request shows.
struct Checked {
    client_name: String,
    consent: Vec<&'static str>,
}

/// Checks the authorization request with auth-svc: what to show, or the answer already (an error
/// page when the client or its redirect URI is unknown, an error sent back to the redirect URI for
/// any other fault).
async fn check(
    state: &AppState,
    t: &'static Strings,
    tenant: &str,
    id: &RequestId,
    params: &AuthzParams,
) -> Result<Checked, Response> {
    let call = oauth_flow(state).check_authorization(anonymous(tenant, id, params.request(false))).await;
    let check = match call {
        Ok(c) => c.into_inner(),
        Err(status) => {
            let e = upstream(status);
            return Err(match e.code {
                kit::ErrorCode::Unavailable | kit::ErrorCode::Internal => unavailable(t),
                _ => message(t, StatusCode::BAD_REQUEST, t.error_title, t.error_intro, &e.message),
            });
        }
    };
    if !check.error.is_empty() {
        return Err(back_with_error(state, tenant, params, &check.error, &check.error_description));
    }
    let consent = if check.consent_required { check.scopes.iter().map(|s| t.scope(s)).collect() } else { Vec::new() };
    Ok(Checked { client_name: check.client_name, consent })
}

/// A fresh form nonce, and its cookie.
fn new_form_nonce() -> Result<(String, String), ApiError> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| ApiError::internal(&e))?;
    let nonce = hex::encode(raw);
    let cookie = cookie_value(FORM_COOKIE, &nonce, 1800);
    Ok((nonce, cookie))
}

fn frame(
    state: &AppState,
    t: &'static Strings,
    tenant: &str,
    nonce: &str,
    params: &AuthzParams,
) -> Result<Frame, ApiError> {
    Ok(Frame {
        t,
        tenant: tenant.to_owned(),
        action: format!("/t/{tenant}/oauth/authorize"),
        csrf: state.browser.csrf_token(nonce)?,
        hidden: params.hidden(),
    })
}

/// The strings for the browser's language, the tenant the path names and the query of a page
/// request; or the page that says what is wrong with them. A repeated parameter is refused (RFC
/// 6749 3.1) by the decoder.
#[allow(clippy::result_large_err)] // the refusal is the answer
fn read_page_request<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    tenant: &str,
    query: Option<&str>,
) -> Result<(&'static Strings, String, T), Response> {
    let t = Strings::for_language(accept_language(headers));
    let Ok(tenant) = super::login::check_tenant(tenant) else {
        return Err(message(t, StatusCode::NOT_FOUND, t.error_title, t.error_intro, "no such tenant"));
    };
    match serde_urlencoded::from_str::<T>(query.unwrap_or("")) {
        Ok(params) => Ok((t, tenant, params)),
        Err(_) => {
            Err(message(t, StatusCode::BAD_REQUEST, t.error_title, t.error_intro, "malformed or repeated parameters"))
        }
    }
}

/// The hosted login page: checks the authorization request and shows the sign-in form (with the
/// scopes to agree to, for a client that is not first-party).
pub async fn authorize_page(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    PathParams(tenant): PathParams<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (t, tenant, params) = match read_page_request::<AuthzParams>(&headers, &tenant, query.as_deref()) {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let checked = match check(&state, t, &tenant, &id, &params).await {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    if params.prompt.split(' ').any(|p| p == "none") {
        return back_with_error(&state, &tenant, &params, "login_required", "the user must sign in");
    }
    let answer = || -> Result<Response, ApiError> {
        let (nonce, cookie) = new_form_nonce()?;
        let f = frame(&state, t, &tenant, &nonce, &params)?;
        let page = LoginPage {
            f: &f,
            client_name: &checked.client_name,
            consent: checked.consent.clone(),
            email: &params.login_hint,
            error: "",
        };
        Ok(html(StatusCode::OK, page.render(), &csp(Some(&params.redirect_uri)), &[cookie]))
    };
    answer().unwrap_or_else(|_| unavailable(t))
}

/// One posted step of the hosted login.
pub async fn authorize_step(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    PathParams(tenant): PathParams<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let t = Strings::for_language(accept_language(&headers));
    let Ok(tenant) = super::login::check_tenant(&tenant) else {
        return message(t, StatusCode::NOT_FOUND, t.error_title, t.error_intro, "no such tenant");
    };
    let answer = step(&state, t, &tenant, &id, &addr, &headers, &body).await;
    recorded_in(answer, Some(tenant))
}

/// A step's context: the request, its page frame and the client's name.
struct Step<'a> {
    state: &'a AppState,
    tenant: &'a str,
    id: &'a RequestId,
    client: pb::ClientInfo,
    params: AuthzParams,
    f: Frame,
    checked: Checked,
}

async fn step(
    state: &AppState,
    t: &'static Strings,
    tenant: &str,
    id: &RequestId,
    addr: &SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    // Only the page itself posts here: a form on another site is refused before anything is read.
    if state.browser.check_origin(headers).is_err() {
        return message(t, StatusCode::FORBIDDEN, t.error_title, t.session_expired, "cross-site request");
    }
    let Ok(form) = serde_urlencoded::from_bytes::<StepForm>(body) else {
        return message(t, StatusCode::BAD_REQUEST, t.error_title, t.error_intro, "malformed form");
    };
    let nonce = crate::browser::cookie(headers, FORM_COOKIE);
    let bound = state.browser.verify_csrf_token(&form.csrf);
    if nonce.is_none() || bound.as_deref() != nonce {
        return message(t, StatusCode::FORBIDDEN, t.error_title, t.session_expired, "");
    }
    let checked = match check(state, t, tenant, id, &form.params).await {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    if form.action == "cancel" {
        let mut answer = back_with_error(state, tenant, &form.params, "access_denied", "the user cancelled");
        forget_enrolment(&mut answer);
        return answer;
    }
    let Ok(f) = frame(state, t, tenant, nonce.unwrap_or_default(), &form.params) else { return unavailable(t) };
    let s =
        Step { state, tenant, id, client: client_info(state, addr, headers), params: form.params.clone(), f, checked };
    match form.step.as_str() {
        "password" => s.password(&form.email, form.password).await,
        "mfa" => s.mfa(form.mfa_token, form.code, form.passkey_offered == "1").await,
        "passkey" => s.passkey(&form.ceremony_id, &form.credential).await,
        "mfa_passkey" => s.mfa_passkey(form.mfa_token, &form.ceremony_id, &form.credential).await,
        "enrol" => {
            let refresh = crate::browser::cookie(headers, ENROL_COOKIE).map(str::to_owned);
            s.enrol(refresh, &form.enrol_secret, &form.enrol_uri, form.code).await
        }
        "appeal" => s.appeal(&form.email, form.password, &form.statement).await,
        _ => message(t, StatusCode::BAD_REQUEST, t.error_title, t.error_intro, "unknown step"),
    }
}

fn forget_enrolment(resp: &mut Response) {
    if let Ok(v) = HeaderValue::from_str(&cookie_value(ENROL_COOKIE, "", 0)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn bearer<T>(tenant: &str, id: &RequestId, token: &str, msg: T) -> tonic::Request<T> {
    kit::client::with_context(tonic::Request::new(msg), Some(tenant), Some(&id.0), Some(token))
}

impl Step<'_> {
    fn t(&self) -> &'static Strings {
        self.f.t
    }

    fn page(&self, status: StatusCode, page: Result<String, askama::Error>) -> Response {
        html(status, page, &csp(Some(&self.params.redirect_uri)), &[])
    }

    fn login_page(&self, status: StatusCode, email: &str, error: &str) -> Response {
        let page = LoginPage {
            f: &self.f,
            client_name: &self.checked.client_name,
            consent: self.checked.consent.clone(),
            email,
            error,
        };
        self.page(status, page.render())
    }

    fn mfa_page(&self, status: StatusCode, mfa_token: &str, error: &str, passkey: bool) -> Response {
        self.page(status, MfaPage { f: &self.f, mfa_token, error, passkey }.render())
    }

    /// The answer to a refused sign-in step, shown on the page that asked.
    fn refused(&self, e: &ApiError, email: &str) -> Response {
        let t = self.t();
        match e.reason.as_ref() {
            "INVALID_CREDENTIALS" => self.login_page(StatusCode::UNAUTHORIZED, email, t.wrong_credentials),
            "LOGIN_LOCKED" | "MFA_LOCKED" | "ACCOUNT_UNDER_ATTACK" | "RATE_LIMITED" => {
                self.login_page(StatusCode::TOO_MANY_REQUESTS, email, t.locked)
            }
            "USER_SUSPENDED" => {
                let reason = e.message.strip_prefix("account suspended: ").unwrap_or_default();
                let page = SuspendedPage { f: &self.f, reason, email, notice: "", error: "", appeal_form: true };
                self.page(StatusCode::FORBIDDEN, page.render())
            }
            _ if matches!(e.code, kit::ErrorCode::Unavailable | kit::ErrorCode::Internal) => unavailable(t),
            _ => self.login_page(StatusCode::BAD_REQUEST, email, t.error_intro),
        }
    }

    async fn password(&self, email: &str, password: SecretString) -> Response {
        let msg = pb::LoginRequest {
            tenant: self.tenant.to_owned(),
            email: email.to_owned(),
            password: password.expose_secret().to_owned(),
            client: Some(self.client.clone()),
        };
        match authn(self.state).login(anonymous(self.tenant, self.id, msg)).await {
            Ok(r) => self.answered(r.into_inner()).await,
            Err(status) => self.refused(&upstream(status), email),
        }
    }

    async fn mfa(&self, mfa_token: SecretString, code: SecretString, passkey: bool) -> Response {
        let msg = pb::VerifyMfaRequest {
            tenant: self.tenant.to_owned(),
            mfa_token: mfa_token.expose_secret().to_owned(),
            code: code.expose_secret().trim().to_owned(),
            client: Some(self.client.clone()),
        };
        match authn(self.state).verify_mfa(anonymous(self.tenant, self.id, msg)).await {
            Ok(r) => self.answered(r.into_inner()).await,
            Err(status) => {
                let e = upstream(status);
                if e.reason == "INVALID_MFA" {
                    self.mfa_page(StatusCode::UNAUTHORIZED, mfa_token.expose_secret(), self.t().wrong_code, passkey)
                } else {
                    self.refused(&e, "")
                }
            }
        }
    }

    /// A passwordless sign-in by passkey (the page's script answered the ceremony).
    async fn passkey(&self, ceremony_id: &str, credential: &str) -> Response {
        let msg = pb::FinishPasskeyLoginRequest {
            tenant: self.tenant.to_owned(),
            ceremony_id: ceremony_id.to_owned(),
            credential_json: credential.to_owned(),
            client: Some(self.client.clone()),
        };
        match super::passkeys::client(self.state).finish_login(anonymous(self.tenant, self.id, msg)).await {
            Ok(r) => self.answered(r.into_inner()).await,
            Err(status) => {
                let e = upstream(status);
                match e.reason.as_ref() {
                    "USER_SUSPENDED" => {
                        let reason = e.message.strip_prefix("account suspended: ").unwrap_or_default();
                        let page =
                            SuspendedPage { f: &self.f, reason, email: "", notice: "", error: "", appeal_form: false };
                        self.page(StatusCode::FORBIDDEN, page.render())
                    }
                    _ if matches!(e.code, kit::ErrorCode::Unavailable | kit::ErrorCode::Internal) => {
                        unavailable(self.t())
                    }
                    _ => self.login_page(StatusCode::UNAUTHORIZED, "", self.t().passkey_rejected),
                }
            }
        }
    }

    /// The second step of a password sign-in by passkey.
    async fn mfa_passkey(&self, mfa_token: SecretString, ceremony_id: &str, credential: &str) -> Response {
        let msg = pb::FinishPasskeySecondFactorRequest {
            tenant: self.tenant.to_owned(),
            mfa_token: mfa_token.expose_secret().to_owned(),
            ceremony_id: ceremony_id.to_owned(),
            credential_json: credential.to_owned(),
            client: Some(self.client.clone()),
        };
        match super::passkeys::client(self.state).finish_second_factor(anonymous(self.tenant, self.id, msg)).await {
            Ok(r) => self.answered(r.into_inner()).await,
            Err(status) => {
                let e = upstream(status);
                match e.reason.as_ref() {
                    "PASSKEY_REJECTED" | "CEREMONY_NOT_FOUND" => self.mfa_page(
                        StatusCode::UNAUTHORIZED,
                        mfa_token.expose_secret(),
                        self.t().passkey_rejected,
                        true,
                    ),
                    _ => self.refused(&e, ""),
                }
            }
        }
    }

    /// The next page after a sign-in step auth-svc accepted: the second factor it asks for, or
    /// the signed-in user's way on.
    async fn answered(&self, r: pb::LoginResponse) -> Response {
        match r.result {
            Some(pb::login_response::Result::Tokens(tokens)) => self.signed_in(tokens).await,
            Some(pb::login_response::Result::Mfa(m)) => {
                let passkey = m.methods.iter().any(|m| m == "passkey");
                self.mfa_page(StatusCode::OK, &m.mfa_token, "", passkey)
            }
            None => unavailable(self.t()),
        }
    }

    /// A user signed in: enrolment first if their role requires a second factor they lack, else
    /// the code for the client.
    async fn signed_in(&self, tokens: pb::Tokens) -> Response {
        if !tokens.mfa_enrollment_required {
            return self.authorize(&tokens.access_token).await;
        }
        let call = super::sessions(self.state)
            .enroll_totp(bearer(self.tenant, self.id, &tokens.access_token, pb::EnrollTotpRequest {}))
            .await;
        match call {
            Ok(r) => {
                let r = r.into_inner();
                let page = EnrolPage { f: &self.f, secret: &r.secret, uri: &r.otpauth_uri, error: "" };
                let cookie = cookie_value(ENROL_COOKIE, &tokens.refresh_token, tokens.refresh_expires_in.min(1800));
                html(StatusCode::OK, page.render(), &csp(Some(&self.params.redirect_uri)), &[cookie])
            }
            Err(status) => self.refused(&upstream(status), ""),
        }
    }

    /// Asks auth-svc for the code of the signed-in user (the form that signed in showed the scopes
    /// to agree to), ends the page's own session, and sends the browser to the client.
    async fn authorize(&self, access_token: &str) -> Response {
        match self.code(access_token).await {
            Ok(redirect_to) => {
                let mut answer = see_other(&redirect_to);
                forget_enrolment(&mut answer);
                answer
            }
            Err(answer) => answer,
        }
    }

    async fn code(&self, access_token: &str) -> Result<String, Response> {
        let msg = self.params.request(true);
        let call = oauth_flow(self.state).authorize(bearer(self.tenant, self.id, access_token, msg)).await;
        let logout = pb::LogoutRequest { refresh_token: String::new() };
        if let Err(status) = authn(self.state).logout(bearer(self.tenant, self.id, access_token, logout)).await {
            tracing::warn!(code = ?status.code(), "the hosted login's own session did not end");
        }
        match call {
            Ok(r) => Ok(r.into_inner().redirect_to),
            Err(status) => {
                let e = upstream(status);
                Err(match e.code {
                    kit::ErrorCode::Unavailable | kit::ErrorCode::Internal => unavailable(self.t()),
                    _ => {
                        let error = e.reason.to_ascii_lowercase();
                        back_with_error(self.state, self.tenant, &self.params, &error, &e.message)
                    }
                })
            }
        }
    }

    /// Confirms TOTP enrolment with the session the password opened (its refresh token in the
    /// enrolment cookie), then shows the backup codes and the way on to the client.
    async fn enrol(&self, refresh: Option<String>, secret: &str, uri: &str, code: SecretString) -> Response {
        let t = self.t();
        let Some(refresh) = refresh else {
            return message(t, StatusCode::FORBIDDEN, t.error_title, t.session_expired, "");
        };
        let fresh = match self.refresh(refresh).await {
            Ok(tokens) => tokens,
            Err(answer) => return answer,
        };
        let confirm = pb::ConfirmTotpRequest { code: code.expose_secret().trim().to_owned() };
        let confirmed =
            super::sessions(self.state).confirm_totp(bearer(self.tenant, self.id, &fresh.access_token, confirm)).await;
        let codes = match confirmed {
            Ok(r) => r.into_inner().backup_codes,
            Err(status) => {
                let e = upstream(status);
                if e.code != kit::ErrorCode::Unauthenticated || e.reason != "INVALID_MFA" {
                    return self.refused(&e, "");
                }
                let page = EnrolPage { f: &self.f, secret, uri, error: t.wrong_code };
                let cookie = cookie_value(ENROL_COOKIE, &fresh.refresh_token, fresh.refresh_expires_in.min(1800));
                return html(StatusCode::UNAUTHORIZED, page.render(), &csp(Some(&self.params.redirect_uri)), &[cookie]);
            }
        };
        // The session passed a second factor: its next access token is a full one.
        let full = match self.refresh(fresh.refresh_token).await {
            Ok(tokens) => tokens,
            Err(answer) => return answer,
        };
        let redirect_to = match self.code(&full.access_token).await {
            Ok(r) => r,
            Err(answer) => return answer,
        };
        let page =
            BackupPage { f: &self.f, codes: &codes, client_name: &self.checked.client_name, redirect_to: &redirect_to };
        let mut answer = self.page(StatusCode::OK, page.render());
        forget_enrolment(&mut answer);
        answer
    }

    async fn refresh(&self, refresh_token: String) -> Result<pb::Tokens, Response> {
        let msg =
            pb::RefreshRequest { tenant: self.tenant.to_owned(), refresh_token, client: Some(self.client.clone()) };
        match authn(self.state).refresh(anonymous(self.tenant, self.id, msg)).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) => {
                let e = upstream(status);
                let t = self.t();
                Err(match e.code {
                    kit::ErrorCode::Unavailable | kit::ErrorCode::Internal => unavailable(t),
                    _ => message(t, StatusCode::FORBIDDEN, t.error_title, t.session_expired, ""),
                })
            }
        }
    }

    /// A suspended user's appeal, with the password again.
    async fn appeal(&self, email: &str, password: SecretString, statement: &str) -> Response {
        let t = self.t();
        let msg = pb::FileAppealRequest {
            credentials: Some(pb::AppealCredentials {
                tenant: self.tenant.to_owned(),
                email: email.to_owned(),
                password: password.expose_secret().to_owned(),
                client: Some(self.client.clone()),
            }),
            statement: statement.to_owned(),
        };
        let call = super::appeals::appeals(self.state).file_appeal(anonymous(self.tenant, self.id, msg)).await;
        let (status, reason, notice, error, appeal_form) = match call {
            Ok(r) => (StatusCode::OK, r.into_inner().suspension_reason, t.appeal_filed, "", false),
            Err(status) => {
                let e = upstream(status);
                match e.reason.as_ref() {
                    "APPEAL_OPEN" => (StatusCode::CONFLICT, String::new(), t.appeal_open, "", false),
                    "INVALID_CREDENTIALS" => (StatusCode::UNAUTHORIZED, String::new(), "", t.wrong_credentials, true),
                    "NOT_SUSPENDED" => return self.login_page(StatusCode::OK, email, ""),
                    _ => return self.refused(&e, email),
                }
            }
        };
        let page = SuspendedPage { f: &self.f, reason: &reason, email, notice, error, appeal_form };
        self.page(status, page.render())
    }
}

/// The query of an RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).
#[derive(Debug, Default, Deserialize)]
struct LogoutParams {
    #[serde(default)]
    id_token_hint: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    post_logout_redirect_uri: String,
    #[serde(default)]
    state: String,
}

/// RP-initiated logout: ends the session the ID token hint was issued with, then returns to the
/// client's registered post-logout URI (or says it is done). A request without a hint that
/// verifies is refused: a link on any site must not sign a user out.
pub async fn logout(
    State(state): State<AppState>,
    Extension(id): Extension<RequestId>,
    PathParams(tenant): PathParams<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let (t, tenant, params) = match read_page_request::<LogoutParams>(&headers, &tenant, query.as_deref()) {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let msg = pb::EndSessionRequest {
        id_token_hint: params.id_token_hint,
        client_id: params.client_id,
        post_logout_redirect_uri: params.post_logout_redirect_uri,
        state: params.state,
    };
    let answer = match oauth_flow(&state).end_session(anonymous(&tenant, &id, msg)).await {
        Ok(r) => {
            let r = r.into_inner();
            if r.redirect_to.is_empty() {
                message(t, StatusCode::OK, t.logged_out_title, t.logged_out, "")
            } else {
                see_other(&r.redirect_to)
            }
        }
        Err(status) => {
            let e = upstream(status);
            match e.code {
                kit::ErrorCode::Unavailable | kit::ErrorCode::Internal => unavailable(t),
                _ => message(t, StatusCode::BAD_REQUEST, t.error_title, t.error_intro, &e.message),
            }
        }
    };
    recorded_in(answer, Some(tenant))
}

/// The pages' stylesheet.
pub async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET).into_response()
}

/// The pages' script: the passkey buttons.
pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_may_post_only_to_the_page_and_the_clients_redirect_origin() {
        let policy = csp(Some("https://app.example.com:8443/cb?x=1"));
        assert!(policy.contains("form-action 'self' https://app.example.com:8443;"), "{policy}");
        assert!(
            policy.starts_with("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self';"),
            "no inline style or script: {policy}"
        );
        assert!(csp(Some("com.example.app:/cb")).contains("form-action 'self' com.example.app:;"));
        assert!(csp(None).contains("form-action 'self';"));
    }

    #[test]
    fn the_request_is_carried_along_without_empty_fields() {
        let params = AuthzParams { client_id: "c".into(), state: "s\"<".into(), ..Default::default() };
        assert_eq!(params.hidden(), vec![("client_id", "c".to_owned()), ("state", "s\"<".to_owned())]);
        let f = Frame {
            t: &super::super::strings::EN,
            tenant: "acme".into(),
            action: "/t/acme/oauth/authorize".into(),
            csrf: "k".into(),
            hidden: params.hidden(),
        };
        let page = MfaPage { f: &f, mfa_token: "m", error: "", passkey: false }.render().expect("page");
        assert!(page.contains("name=\"state\" value=\"s&#34;&#60;\""), "escaped: {page}");
        assert!(page.contains("<script src=\"/oauth/assets/hosted.js\" defer></script>"));
        assert_eq!(page.matches("<script").count(), 1, "no inline script: {page}");
    }
}
