"""Who may do what: identities, the policy function, and (later) audit and approvals."""
