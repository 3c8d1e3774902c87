-- Whether an API key was minted with a recent second factor. A key carrying a privileged or
-- step-up permission passes step-up at use because its minting was stepped up; keys minted before
-- that was required (security review item 1) were not, so they keep their other scopes but lose
-- the sensitive ones (introspection drops them) until a new key is minted with a second factor.
ALTER TABLE api_keys ADD COLUMN minted_with_mfa boolean NOT NULL DEFAULT false;
