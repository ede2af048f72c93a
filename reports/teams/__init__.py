"""Teams: run by their admins; members share connections; team reports and spend per member.

roster.py runs a team, invitations.py brings people in, sharing.py says which connections
count for it, team_reports.py asks for its reports, member_spend.py sums a team report per
member.

Rules (S2, S3, M1-M6); what each role may see and do is the capability table in
reports/access.py (`CAPABILITIES`), which every check here asks:
- A team's admins run it without Django staff rights: they invite people by email address
  (invitations.py, M6: nobody joins without accepting; the operator's CLI adds directly),
  change roles, remove people and choose its price book. A team always keeps at
  least one admin. Anyone can create a team and becomes its admin; anyone can leave.
- A member sees the team and the names of its members, and chooses which of their *own*
  connections the team may report on; they never see other members' OSAI account names or
  token endings (M2).
- A team admin also requests and reads team reports: spend per member on the shared
  connections. Nobody sees another person's token beyond its last four characters.
- A viewer (finance) reads what admins read (the team's month, budgets, reports, every CSV)
  and may opt into the team's digests; changes nothing, requests nothing, shares nothing
  (becoming a viewer ends one's sharing), gets no budget alerts, and never sees another
  person's OSAI account name or token ending (M5).
- A connection counts for a team only while its owner is a member and shares it. Leaving
  (or being removed) ends the sharing; un-sharing or leaving takes effect at once, in every
  team report page, export and retry, and stops the team's buckets in flight on that
  connection (M1). Being added again shares nothing by itself.
- A shared connection that needs a new token is skipped by a new team report and named on
  its page; it does not block the others (M3).

Per-member sums are SQL aggregates over the report's finished buckets; Python only prices the
aggregated (member, period) rows.
"""


class TeamError(Exception):
    """A team action that cannot be done; the message is for the page or the command."""


def clean_name(name: str, *, noun: str, max_length: int) -> str:
    """A name a team gives (a price book's, a saved view's): one line, its runs of white space
    as one space, neither empty nor longer than its column."""
    name = " ".join((name or "").split())
    if not name:
        raise TeamError(f"Give the {noun} a name.")
    if len(name) > max_length:
        raise TeamError(f"A {noun}'s name has at most {max_length} characters.")
    return name
