"""Signing in: django-allauth's views with our rules (docs/requirements.md S8, S10, S12, S14, S15).

adapters.py   who may sign up (nobody by password; by single sign-on only an allowed email),
              the client's address, two-factor secrets encrypted with OSAI_TOKEN_KEYS
oidc.py       the OpenID Connect login and callback, with the id_token's signature always checked
middleware.py a team that requires two-factor sends its password users to set it up
urls.py       allauth's URLs as this site offers them
"""
