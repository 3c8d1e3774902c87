-- What the user agreed to share with the OAuth client a session was opened for: `/userinfo`
-- answers the claims of these scopes (openid, profile, email), and nothing for a first-party
-- session (NULL).
ALTER TABLE sessions ADD COLUMN oauth_scopes text[];
