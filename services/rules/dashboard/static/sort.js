// Sortable tables: click a header of a table.sortable to sort by that column (again to reverse).
document.querySelectorAll("table.sortable").forEach((table) => {
  table.querySelectorAll("thead th").forEach((th, index) => {
    th.addEventListener("click", (event) => {
      if (event.target.closest("a")) event.preventDefault();
      const numeric = th.dataset.type === "number";
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      const descending = th.dataset.sorted !== "desc";
      const key = (row) => {
        const text = row.cells[index] ? row.cells[index].textContent.trim() : "";
        if (!numeric) return text.toLowerCase();
        const n = parseFloat(text.replace(/[^0-9.+-]/g, ""));
        return Number.isNaN(n) ? -Infinity : n;
      };
      rows.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0) * (descending ? -1 : 1));
      table.querySelectorAll("thead th").forEach((other) => delete other.dataset.sorted);
      th.dataset.sorted = descending ? "desc" : "asc";
      rows.forEach((row) => body.appendChild(row));
    });
  });
});
