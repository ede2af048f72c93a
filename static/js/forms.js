// Forms: Enter in a "Save as" field saves the report form as a view (its own button) instead
// of requesting the report (the form's first button). No inline script: the CSP allows none.
document.addEventListener("keydown", (event) => {
  const input = event.target;
  if (event.key !== "Enter" || !(input instanceof HTMLInputElement) || input.name !== "view_name") {
    return;
  }
  const button = input.closest(".save-view")?.querySelector("button[formaction]");
  if (button) {
    event.preventDefault();
    button.click();
  }
});
